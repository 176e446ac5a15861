"""The fault run, small and seeded: a few dozen cases through the four services as processes
while each is SIGKILLed, the broker and the store are each stopped and started, the SMTP sink,
one partner's endpoint and the physicians' institution's FHIR endpoint fail for a while; then
nothing is lost, nothing done twice (`make chaos` runs the full size; see
tests/reliability/chaos.py)."""

import os

import pytest

from tests.reliability.chaos import Figures, Plan, Run, report, run, write_results

pytestmark = pytest.mark.infra


@pytest.mark.timeout(600)  # under 3 minutes on a quiet machine; the faults take their time
async def test_nothing_lost_nothing_done_twice_under_faults() -> None:
    plan = Plan(
        cases=int(os.environ.get("CHAOS_SMALL_CASES", "24")),
        seed=int(os.environ.get("CHAOS_SEED", "7")),
        reviewers=4,
        capacity=(2, 4),
        filers=4,
        fault_seconds=90.0,
        kills_per_service=2,
        broker_down_seconds=6.0,
        store_down_seconds=5.0,
        smtp_fail_seconds=15.0,
        partner_fail_seconds=20.0,
        fhir_fail_seconds=15.0,
        quiet_timeout=240.0,
    )
    tampered = Figures()
    marked: dict[str, str] = {}  # the physicians' cases tampered with, and the copy's id

    async def audit_sees_tampering(chaos: Run) -> None:
        # The audit must see a lost and a doubled effect: one case's timeline entry doubled,
        # another's report version taken away, a third's email send removed; on the later
        # paths, a follow-up question doubled in review and a professional's email removed, a
        # translation doubled in review and the translator's email removed; read twice and
        # translated, the translation back doubled in review and counted again in the
        # translator's load, and the second reading counted again in its reader's; a physician's
        # FHIR copy taken from the endpoint's record, another physician's email send removed.
        nonlocal tampered
        asked = next(c for c, m in chaos.cases.items() if m.path == "follow-up")
        abroad = next(c for c, m in chaos.cases.items() if m.path == "translation")
        twice = next(c for c, m in chaos.cases.items() if m.path == "translated-reading")
        named = [c for c, m in chaos.cases.items() if m.path == "physician"]
        posted = next(c for c in named if chaos.cases[c].params["channel"] == "fhir")
        mailed = next(c for c in named if chaos.cases[c].params["channel"] == "email")
        # Three other cases, so that each case's tampering reads as itself (whatever the seed).
        others = [c for c in chaos.cases if c not in (asked, abroad, twice, *named)]
        first, second, third = others[:3]
        rounds = chaos.db("review")["assignments"]
        held = next(r for r in await rounds.find({"case_id": asked}).to_list() if r["follow_ups"])
        await rounds.update_one(
            {"_id": held["_id"]}, {"$push": {"follow_ups": held["follow_ups"][0]}}
        )
        pro = await chaos.db("notify")["cases"].find_one({"_id": asked})
        assert pro is not None
        await chaos.db("notify")["sends"].delete_one(
            {"_id": {"$in": pro["notifications"]}, "template": "pro_follow_up"}
        )
        both = next(
            r for r in await rounds.find({"case_id": abroad}).to_list() if r["translations"]
        )
        await rounds.update_one(
            {"_id": both["_id"]}, {"$push": {"translations": both["translations"][0]}}
        )
        told = await chaos.db("notify")["cases"].find_one({"_id": abroad})
        assert told is not None
        await chaos.db("notify")["sends"].delete_one(
            {"_id": {"$in": told["notifications"]}, "template": "pro_translation"}
        )
        read = next(
            r for r in await rounds.find({"case_id": twice}).to_list() if r["second_reading"]
        )
        back = next(t for t in read["translations"] if t["way"] == "to_patient")
        await rounds.update_one({"_id": read["_id"]}, {"$push": {"translations": back}})
        await chaos.db("review")["translators"].update_one(
            {"_id": back["translator_id"]}, {"$push": {"open_translations": back["id"]}}
        )
        await chaos.db("review")["reviewers"].update_one(
            {"_id": read["second_reading"]["reviewer_id"]},
            {"$push": {"open_assignments": f"second:{read['_id']}"}},
        )
        intake = chaos.db("intake")["cases"]
        doc = await intake.find_one({"_id": first}, {"timeline": 1})
        assert doc is not None
        await intake.update_one({"_id": first}, {"$push": {"timeline": doc["timeline"][-1]}})
        reports = chaos.db("reports")["cases"]
        issued = await reports.find_one({"_id": second}, {"versions": 1})
        assert issued is not None
        await reports.update_one({"_id": second}, {"$set": {"versions": issued["versions"][:-1]}})
        notified = await chaos.db("notify")["cases"].find_one({"_id": third})
        assert notified is not None
        await chaos.db("notify")["sends"].delete_one({"_id": notified["notifications"][0]})
        sends = chaos.db("notify")["sends"]
        copies = await chaos.db("notify")["cases"].find_one({"_id": posted})
        assert copies is not None
        sent = await sends.find_one(
            {"_id": {"$in": copies["notifications"]}, "template": "physician_report"}
        )
        assert sent is not None
        kept = sent["message_id"].strip("<>")
        chaos.institution.received = [p for p in chaos.institution.received if p.webhook_id != kept]
        marked.update(posted=posted, kept=kept, mailed=mailed)
        copies = await chaos.db("notify")["cases"].find_one({"_id": mailed})
        assert copies is not None
        await sends.delete_one(
            {"_id": {"$in": copies["notifications"]}, "template": "physician_report"}
        )
        chaos.figures, tampered = Figures(), chaos.figures
        await chaos.audit()
        chaos.figures, tampered = tampered, chaos.figures

    figures = await run(plan, probe=audit_sees_tampering)
    print(report(figures))
    write_results(figures)
    assert sum(figures.kills.values()) >= 4, figures.kills
    assert figures.broker_restarts == figures.store_restarts == 1
    assert figures.events_published > 0
    # The faults met traffic: the sink refused emails and the partner deliveries, for a while.
    assert figures.email_failed_attempts > 0 and figures.webhook_failed_attempts > 0, report(
        figures
    )
    assert figures.problems == [], report(figures)
    # Each later path of the care pathway ran, through the faults (mixes.py).
    assert set(figures.paths) == {
        "information",
        "follow-up",
        "second-reading",
        "translation",
        "translated-reading",
        "physician",
    }
    assert figures.information_answered and figures.information_expired, report(figures)
    assert figures.follow_ups_answered and figures.addenda == figures.follow_ups_answered
    assert figures.second_reading_comments and figures.pro_emails, report(figures)
    # International review (read twice, for some): translated both ways, at least once each
    # way while the faults happened, and every report of it states its translation.
    ways = ("to_specialist", "to_patient")
    abroad = figures.paths["translation"] + figures.paths["translated-reading"]
    assert all(figures.translations.get(w) == abroad for w in ways), report(figures)
    assert all(figures.translations_under_faults.get(w) for w in ways), report(figures)
    assert figures.translated_reports == abroad, report(figures)
    assert figures.second_readings == sum(
        figures.paths[p] for p in ("second-reading", "translated-reading")
    ), report(figures)
    # The physician's copy: by email and posted to the FHIR endpoint, which refused for a while.
    assert figures.physician_copies.get("email") and figures.physician_copies.get("fhir")
    assert figures.fhir_posts and figures.fhir_failed_attempts, report(figures)
    said = "\n".join(tampered.problems)
    assert "timeline entry" in said, said
    assert "report versions for opinions" in said, said
    assert "sends missing" in said, said
    assert "follow-up entries, expected" in said, said
    assert "sends missing {'pro_follow_up': 1}" in said, said
    assert "translation entries, expected 2" in said, said
    assert "sends missing {'pro_translation': 1}" in said, said
    assert "2 translations to_patient in review, expected 1" in said, said
    assert "the second reader's load still counts the reading" in said, said
    assert sum("the translator's load still counts" in p for p in tampered.problems) == 1, said
    assert f"{marked['posted']}: copy {marked['kept']} never posted" in said, said
    assert f"{marked['mailed']}: sends missing {{'physician_report': 1}}" in said, said
    assert f"{marked['mailed']}: no copy for the physician in notify" in said, said
