"""The fault run's mixes of the care pathway: which cases take which of the later paths while
the faults happen, what the driver does on each path, and what the audit expects of it.

A mix is one row of `MIXES`: its name, the services' settings it needs, how it draws a case's
parameters, its driver's steps (before the opinion, the opinion itself, after it) and its audit
of the final round and of the case's events (review's requests, follow-ups and readings, each
applied once). The common audit in `chaos.py` counts what every path shares (report versions,
timeline entries, emails, webhooks) from the events themselves. International review's
translations come as one more row: a `Mix` with its steps and its audit; a row may combine two
others (their steps in order, their audits and what their order must show).

- `information`: the specialist asks the patient (or the filing partner) for more; the filer
  answers through intake, or the request is left to expire (the run's expiry is short);
- `follow-up`: one to three follow-up questions after the report, one after the other, each
  answered by the specialist (a report version with the addendum for each);
- `second-reading`: a second specialist reads the opinion before it is released, by the
  coordinators' rule for a specialty or at the first specialist's request; comments once, then
  agreement, for some; agreement at once for the others;
- `translation`: international review; the patient accepts it, and only specialists who read
  English take the cases of its specialty, so a translator takes the case into English before
  the specialist opens it, and the opinion back into French before it is released;
- `translated-reading`: `second-reading` and `translation` together, with the steps of their
  rows: an international review whose specialist asks for a second reading; another English
  reader reads the opinion as written (never through the translator), with comments once for
  some, and agrees; only then is the opinion agreed translated back into French, and the report
  names both readers and states the translation;
- `physician`: the patient names their treating physician and consents to send them the report;
  some physicians get the email with the secure link, the others' institution has a FHIR
  endpoint (served by the run, failing for a spell) that receives the report's FHIR document.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from avis.review.rules import reading_load_id
from avis.shared.events import Language
from tests.support.samples import OPINION, OPINIONS, case_body

if TYPE_CHECKING:
    from tests.reliability.chaos import CaseMix, Run

Document = dict[str, Any]
Events = list[dict[str, Any]]

QUESTION = "Merci d'envoyer le compte rendu opératoire et la dernière créatininémie."
ANSWER = "Voici le compte rendu ; la créatininémie de mars était à 92 µmol/L."
FOLLOW_UP = "Puis-je reprendre le vélo d'appartement avant l'intervention ?"
FOLLOW_UP_ANSWER = "Oui, à intensité modérée, trente minutes au plus."
COMMENTS = "Le stade retenu ne correspond pas au compte rendu du scanner de janvier."
CORRECTED = {**OPINION, "further_tests": "PET-CT before surgery, and a lung function test."}
# Read twice by the coordinators' rule: the cases of this specialty (the others are oncology).
RULE_SPECIALTY = "cardiology"
# An unanswered request expires after this long (the overdue job looks every few seconds).
EXPIRY_SECONDS = 40.0
# International review: only English readers take this specialty (the others read French).
ABROAD_SPECIALTY = "rheumatology"
SUMMARY_EN = "Joint pain in both hands since the winter, morning stiffness lasting an hour."
OPINION_FR = OPINIONS[Language.FR]
TRANSLATOR_NAME = "Hélène Vasseur-Grant"
WAYS = ("to_specialist", "to_patient")
# The treating physician: their institution takes reports at a FHIR endpoint (the run serves it
# and sets it in notify), or not (the default draft's institution: the email with the link).
PHYSICIAN_NAME = "Dr Anne-Sophie Roussel"
FHIR_INSTITUTION = "CHAOS-FHIR"
MAIL_INSTITUTION = "750712184"


def of_type(events: Events, kind: str) -> Events:
    return [e for e in events if e["type"] == f"avis.{kind}.v1"]


@dataclass
class Mix:
    """One path of the care pathway, as the fault run drives and audits it."""

    name: ClassVar[str] = ""
    env: ClassVar[dict[str, str]] = {}  # the services' settings it needs
    declines: ClassVar[bool] = True  # whether its cases may be declined at first
    # Its first case is the earliest filed of those left, so its whole path meets the faults.
    early: ClassVar[bool] = False

    def draw(self, nth: int, rng: random.Random) -> dict[str, Any]:
        """The parameters of this mix's `nth` case."""
        return {}

    def specialty(self, case: CaseMix, default: str) -> str:
        return default

    def consents(self, case: CaseMix) -> list[str]:
        """The consent scopes the patient gives beyond the review (and the partner's share)."""
        return []

    def filing(self, run: Run, case: CaseMix) -> dict[str, Any]:
        """The draft's fields this path sets over the common draft's."""
        return {}

    async def setup(self, run: Run) -> None:
        """What the run sets once before filing (a coordinator's rule)."""

    async def before_accept(self, run: Run, case: CaseMix, aid: str, http: Any) -> None:
        """Before the specialist accepts the round."""

    async def before_opinion(self, run: Run, case: CaseMix, aid: str, http: Any) -> None:
        """After the acceptance, before the opinion."""

    async def opinion(self, run: Run, case: CaseMix, aid: str, http: Any) -> None:
        """Write the opinion (and see it released)."""
        url = f"/v1/assignments/{aid}/opinion"
        await run.step(aid, lambda: http.post(url, json=OPINION), "completed")

    async def after_opinion(self, run: Run, case: CaseMix, aid: str, http: Any) -> None:
        """After the opinion (and any correction)."""

    def opinion_versions(self, case: CaseMix) -> int:
        """The opinion versions the final round holds."""
        return 2 if case.correct else 1

    def audit(self, run: Run, case_id: str, case: CaseMix, final: Document, events: Events) -> None:
        """What review and the events must show for this path, each applied once."""

    async def audit_reads(self, run: Run, case_id: str, case: CaseMix) -> None:
        """What the path must show over HTTP and in the other stores, once quiet."""


async def until(
    run: Run, aid: str, ready: Callable[[Document], bool], every: float = 0.5
) -> Document:
    """The round once `ready` says so (the store may be away meanwhile)."""
    while True:
        doc = await run.assignment(aid)
        if ready(doc):
            return doc
        await asyncio.sleep(every)


async def think(run: Run, case: CaseMix, what: str) -> None:
    rng = random.Random(f"{run.plan.seed}:{case.index}:{what}")
    await asyncio.sleep(rng.uniform(0, run.plan.think_seconds / 2))


def told_versions(events: Events) -> list[int]:
    """The report versions notify tells the patient of (and sends the physician a copy of):
    each newer than the last it told, in the order they arrive (one partition per case); a
    version published after a newer one (a relay's retry after a kill) is not told again."""
    told: list[int] = []
    for e in sorted(of_type(events, "report.ready"), key=lambda e: int(e.get("offset", 0))):
        if (version := int(e["data"]["version"])) > (told[-1] if told else 0):
            told.append(version)
    return told


def once(run: Run, case_id: str, what: str, n: int, want: int) -> None:
    """`n` effects found where `want` were meant: fewer is lost, more is done twice."""
    if n < want:
        run.figures.problem("lost", f"{case_id}: {n} {what}, expected {want}")
    elif n > want:
        run.figures.problem("duplicated_effects", f"{case_id}: {n} {what}, expected {want}")


@dataclass
class Information(Mix):
    """The specialist asks for more information; the filer answers, or lets it expire."""

    name: ClassVar[str] = "information"
    env: ClassVar[dict[str, str]] = {
        "AVIS_REVIEW_INFORMATION_EXPIRY_DAYS": f"{EXPIRY_SECONDS / 86400:.8f}",
        "AVIS_REVIEW_OVERDUE_REFRESH_SECONDS": "3",
    }
    expire_every: int = 4  # the 1st, 5th... case of the mix lets its request expire

    def draw(self, nth: int, rng: random.Random) -> dict[str, Any]:
        return {"expire": nth % self.expire_every == 0}

    async def before_opinion(self, run: Run, case: CaseMix, aid: str, http: Any) -> None:
        ask = f"/v1/assignments/{aid}/information-requests"
        await run.step(
            aid,
            lambda: http.post(ask, json={"text": QUESTION}),
            "asked",
            done=lambda d: bool(d.get("requests")),
        )
        doc = await run.assignment(aid)
        request_id = doc["requests"][0]["id"]
        if not case.params["expire"]:
            await think(run, case, "answer")
            await self.answer(run, case, doc["case_id"], request_id)
        # The opinion waits for the clock to resume (answered, or expired).
        await until(
            run,
            aid,
            lambda d: any(r.get("answered_at") or r.get("expired_at") for r in d["requests"]),
            every=1.0,
        )

    async def answer(self, run: Run, case: CaseMix, case_id: str, request_id: str) -> None:
        """The filer answers through intake: a 404 until intake heard of the request, a 409
        once answered (a retry) or expired."""
        filer = run.filer(case, "intake")
        url = f"/v1/cases/{case_id}/information-requests/{request_id}/answer"
        while True:
            got = await run.retrying(lambda: filer.post(url, json={"text": ANSWER}))
            if got.status_code in (200, 409):
                return
            if got.status_code != 404:
                run.figures.problem("", f"{case_id}: answer to {request_id} {got.status_code}")
            await asyncio.sleep(1.0)

    def audit(self, run: Run, case_id: str, case: CaseMix, final: Document, events: Events) -> None:
        f = run.figures
        requests = final.get("requests", [])
        once(run, case_id, "information requests in review", len(requests), 1)
        asked = {e["data"]["request_id"] for e in of_type(events, "review.information-requested")}
        resumed = of_type(events, "review.resumed")
        once(run, case_id, "information requests published", len(asked), 1)
        once(run, case_id, "resumptions published", len(resumed), len(asked))
        provided = of_type(events, "case.information-provided")
        f.information_requests += len(requests)
        for r in requests:
            if r.get("answered_at"):
                f.information_answered += 1
                once(run, case_id, "answers published", len(provided), 1)
            elif r.get("expired_at"):
                # An answer may still have gone out just as the request expired.
                f.information_expired += 1
                once(run, case_id, "answers published", len(provided), min(len(provided), 1))
            else:
                f.problem("stuck_cases", f"{case_id}: request {r['id']} still open")
            if case.params["expire"] and not r.get("expired_at"):
                f.problem("", f"{case_id}: request {r['id']} meant to expire did not")


@dataclass
class FollowUps(Mix):
    """After the report, one to three follow-up questions, each answered in an addendum."""

    name: ClassVar[str] = "follow-up"

    def draw(self, nth: int, rng: random.Random) -> dict[str, Any]:
        return {"questions": 1 + nth % 3}

    async def after_opinion(self, run: Run, case: CaseMix, aid: str, http: Any) -> None:
        asker = run.filer(case, "review")
        for n in range(1, case.params["questions"] + 1):
            await think(run, case, f"ask{n}")
            await self.ask(run, case, aid, asker, n)
            await think(run, case, f"answer{n}")
            await self.answer(run, aid, http, n)

    async def answer(self, run: Run, aid: str, http: Any, n: int) -> None:
        """The specialist answers the `n`th question (a 409 once answered: a retry)."""
        fid = (await run.assignment(aid))["follow_ups"][n - 1]["id"]
        url = f"/v1/follow-ups/{fid}/answer"
        await run.step(
            aid,
            lambda: http.post(url, json={"text": FOLLOW_UP_ANSWER}),
            "answered",
            done=lambda d: bool(d["follow_ups"][n - 1].get("answered_at")),
        )

    async def ask(self, run: Run, case: CaseMix, aid: str, asker: Any, n: int) -> None:
        """Ask the `n`th question once: not again once the round holds it (a lost answer), and
        again while review has not heard of the report yet."""
        url = f"/v1/cases/{case.case_id}/follow-ups"
        while True:
            if len((await run.assignment(aid)).get("follow_ups", [])) >= n:
                return
            try:
                got = await asker.post(url, json={"text": FOLLOW_UP})
            except httpx.TransportError:
                await asyncio.sleep(1.0)
                continue
            if got.status_code == 201:
                return
            early = got.status_code == 409 and str(got.json().get("type", "")).endswith("no-report")
            if not early and got.status_code not in (502, 503, 504):
                run.figures.problem("", f"{case.case_id}: follow-up {n} {got.status_code}")
            await asyncio.sleep(1.0)

    def audit(self, run: Run, case_id: str, case: CaseMix, final: Document, events: Events) -> None:
        want = case.params["questions"]
        held = final.get("follow_ups", [])
        once(run, case_id, "follow-ups in review", len({x["id"] for x in held}), want)
        once(run, case_id, "follow-up entries", len(held), want)
        answered = [x for x in held if x.get("answered_at")]
        once(run, case_id, "follow-ups answered in review", len(answered), want)
        asked = {e["data"]["follow_up_id"] for e in of_type(events, "review.follow-up-asked")}
        told = {e["data"]["follow_up_id"] for e in of_type(events, "review.follow-up-answered")}
        once(run, case_id, "follow-ups published", len(asked), want)
        once(run, case_id, "follow-up answers published", len(told), want)
        run.figures.follow_ups_asked += len(held)
        run.figures.follow_ups_answered += len(answered)


@dataclass
class SecondReading(Mix):
    """A second specialist reads the opinion: by the coordinators' rule for a specialty, or at
    the first specialist's request; comments once then agreement, or agreement at once."""

    name: ClassVar[str] = "second-reading"
    comment_every: int = 2  # the 1st, 3rd... case of the mix gets comments first

    def draw(self, nth: int, rng: random.Random) -> dict[str, Any]:
        way = "coordinator_rule" if nth % 2 == 0 else "first_reader"
        return {"way": way, "comment": nth % self.comment_every == 0}

    def specialty(self, case: CaseMix, default: str) -> str:
        return RULE_SPECIALTY if case.params["way"] == "coordinator_rule" else default

    async def setup(self, run: Run) -> None:
        coordinator = run.client("review", f"{run.tag}-coord", "coordinator")
        rules = {"specialties": [RULE_SPECIALTY], "urgencies": []}
        done = await run.retrying(lambda: coordinator.put("/v1/second-reading-rules", json=rules))
        assert done.status_code == 200, done.text

    async def opinion(self, run: Run, case: CaseMix, aid: str, http: Any) -> None:
        url = f"/v1/assignments/{aid}/opinion"
        asked = {"second_reading": "true"} if case.params["way"] == "first_reader" else {}
        await run.step(aid, lambda: http.post(url, json=OPINION, params=asked), "completed")
        doc = await until(run, aid, lambda d: reading(d).get("state") == "reading")
        second = run.client("review", reading(doc)["reviewer_id"], "reviewer")
        at = f"/v1/second-readings/{aid}"
        if case.params["comment"]:
            await think(run, case, "comments")
            await run.step(
                aid,
                lambda: second.post(f"{at}/comments", json={"text": COMMENTS}),
                "commented",
                done=lambda d: bool(reading(d).get("comments")),
            )
            await think(run, case, "answer")
            await run.step(aid, lambda: http.put(url, json=CORRECTED), "corrected")
            await until(run, aid, lambda d: reading(d).get("state") == "reading")
        await think(run, case, "agree")
        await run.step(
            aid,
            lambda: second.post(f"{at}/agreement"),
            "agreed",
            done=lambda d: reading(d).get("state") == "agreed",
        )

    def opinion_versions(self, case: CaseMix) -> int:
        return 2 if case.params["comment"] else 1

    def audit(self, run: Run, case_id: str, case: CaseMix, final: Document, events: Events) -> None:
        self.audit_reading(run, case_id, case, final, events)
        released_once(run, case_id, events)

    def audit_reading(
        self, run: Run, case_id: str, case: CaseMix, final: Document, events: Events
    ) -> None:
        """The reading in review (agreed, by its reason, by another reader) and its events,
        each once."""
        f = run.figures
        held = reading(final)
        if held.get("state") != "agreed":
            f.problem("stuck_cases", f"{case_id}: second reading {held.get('state')}")
        if held.get("reason") != case.params["way"]:
            f.problem("", f"{case_id}: second reading by {held.get('reason')}")
        if held.get("reviewer_id") in (None, final["reviewer_id"]):
            f.problem("", f"{case_id}: second reader {held.get('reviewer_id')}")
        comments = held.get("comments", [])
        once(run, case_id, "comments in review", len(comments), int(case.params["comment"]))
        commented = of_type(events, "review.second-reading-commented")
        once(run, case_id, "comments published", len(commented), len(comments))
        agreed = of_type(events, "review.second-reading-agreed")
        once(run, case_id, "agreements published", len(agreed), 1)
        f.second_readings += 1
        f.second_reading_comments += len(comments)


def reading(doc: Document) -> Document:
    return dict(doc.get("second_reading") or {})


def released_once(run: Run, case_id: str, events: Events) -> None:
    """The opinion released once (`avis.review.completed.v1`)."""
    once(run, case_id, "opinions released", len(of_type(events, "review.completed")), 1)


@dataclass
class Translations(Mix):
    """International review: the case into English for a specialist who reads no French, the
    opinion back into French, each by the translator of the pair (the specialist's script plays
    the translator, as it plays the second reader)."""

    name: ClassVar[str] = "translation"
    # A declined international round's translation to the specialist is left open in review
    # (in the translators' queue and load): not a path of this row.
    declines: ClassVar[bool] = False
    early: ClassVar[bool] = True  # both ways translated while the faults still happen
    readers_per: int = 4  # one English reader per this many reviewers of the run, 2 at least

    def specialty(self, case: CaseMix, default: str) -> str:
        return ABROAD_SPECIALTY

    def consents(self, case: CaseMix) -> list[str]:
        return ["international_review"]

    async def setup(self, run: Run) -> None:
        """English readers of the mix's specialty (no French reader of it exists), and one
        translator of the pair, told of their work by email."""
        rng = random.Random(f"{run.plan.seed}:translation")
        coordinator = run.client("review", f"{run.tag}-coord", "coordinator")
        for i in range(max(2, run.plan.reviewers // self.readers_per)):
            rid = english_reader(run, i)
            run.capacity[rid] = rng.randint(*run.plan.capacity)
            body = {
                "id": rid,
                "display_name": f"Reviewer {rid}",
                "specialties": [ABROAD_SPECIALTY],
                "languages": ["en"],
                "institution_code": "HOSP-CHAOS",
                "capacity": run.capacity[rid],
                "email": f"{rid}@hospital.example",
            }
            added = await run.retrying(lambda b=body: coordinator.post("/v1/reviewers", json=b))
            assert added.status_code in (200, 201), added.text
            run.reviewer_ids.append(rid)
        translator = {
            "display_name": TRANSLATOR_NAME,
            "languages": ["fr", "en"],
            "capacity": max(10, run.plan.cases // 10),
            "email": f"{translator_of(run)}@traduction.example",
        }
        url = f"/v1/translators/{translator_of(run)}"
        put = await run.retrying(lambda: coordinator.put(url, json=translator))
        assert put.status_code == 200, put.text

    async def before_accept(self, run: Run, case: CaseMix, aid: str, http: Any) -> None:
        """The case into English; the specialist reads the translation."""
        tid = await self.translate(run, case, aid, "to_specialist", {"summary": SUMMARY_EN})
        read = await run.retrying(lambda: http.get(f"/v1/translations/{tid}"))
        got = (read.json().get("translated") or {}) if read.status_code == 200 else {}
        if got.get("summary") != SUMMARY_EN:
            run.figures.problem("", f"{case.case_id}: the specialist read {read.status_code}")

    async def opinion(self, run: Run, case: CaseMix, aid: str, http: Any) -> None:
        """The opinion in English, kept in review; then back into French, which releases it."""
        await super().opinion(run, case, aid, http)
        await self.translate(run, case, aid, "to_patient", {"opinion": OPINION_FR})

    async def translate(
        self,
        run: Run,
        case: CaseMix,
        aid: str,
        way: str,
        body: dict[str, Any],
        opinion: Document = OPINION,
    ) -> str:
        """The translator reads the source (back to the patient: `opinion`, the version
        released), takes the translation and submits it (a 409 after a retry is fine once the
        round shows it taken, or done); its id."""
        doc = await until(run, aid, lambda d: bool(translation(d, way)))
        tid = str(translation(doc, way)["id"])
        translator = run.client("review", translator_of(run), "translator")
        url = f"/v1/translations/{tid}"
        await think(run, case, f"read {way}")
        source = await run.retrying(lambda: translator.get(url))
        wanted = case_summary() if way == "to_specialist" else None
        shown = (source.json().get("source") or {}) if source.status_code == 200 else {}
        if way == "to_specialist" and shown.get("summary") != wanted:
            run.figures.problem("", f"{case.case_id}: source of {tid} read {source.status_code}")
        if way == "to_patient" and shown.get("opinion") != opinion:
            run.figures.problem("", f"{case.case_id}: source of {tid} read {source.status_code}")
        await run.step(
            aid,
            lambda: translator.post(f"{url}/take"),
            f"{way} taken",
            done=lambda d: translation(d, way).get("state") in ("taken", "done"),
        )
        await think(run, case, f"write {way}")
        await run.step(
            aid,
            lambda: translator.put(f"{url}/text", json=body),
            f"{way} translated",
            done=lambda d: translation(d, way).get("state") == "done",
        )
        if not run.faults_done:  # done while the faults still happen
            under = run.figures.translations_under_faults
            under[way] = under.get(way, 0) + 1
        return tid

    def audit(self, run: Run, case_id: str, case: CaseMix, final: Document, events: Events) -> None:
        self.audit_translations(run, case_id, final, events)
        released_once(run, case_id, events)

    def audit_translations(self, run: Run, case_id: str, final: Document, events: Events) -> None:
        """The round's two translations in review (one each way, done) and their events, each
        once."""
        f = run.figures
        if not final.get("international"):
            f.problem("", f"{case_id}: the round is not an international review")
        held = final.get("translations", [])
        once(run, case_id, "translations in review", len({t["id"] for t in held}), 2)
        once(run, case_id, "translation entries", len(held), 2)
        queued = of_type(events, "review.translation-queued")
        done = of_type(events, "review.translation-done")
        for way in WAYS:
            mine = [t for t in held if t["way"] == way]
            once(run, case_id, f"translations {way} in review", len(mine), 1)
            for t in mine:
                if t["state"] != "done":
                    f.problem("stuck_cases", f"{case_id}: translation {t['id']} {t['state']}")
                else:
                    f.translations[way] = f.translations.get(way, 0) + 1
                n = sum(1 for e in queued if e["data"]["translation_id"] == t["id"])
                once(run, case_id, f"translations {way} queued published", n, 1)
                n = sum(1 for e in done if e["data"]["translation_id"] == t["id"])
                once(run, case_id, f"translations {way} done published", n, 1)
        known = {t["id"] for t in held}
        if strays := {e["data"]["translation_id"] for e in queued + done} - known:
            f.problem("duplicated_effects", f"{case_id}: translations published {strays}")

    async def audit_reads(self, run: Run, case_id: str, case: CaseMix) -> None:
        """The report states the translation; the translator's load is released."""
        self.translation_stated(run, case_id, await report_of(run, case_id, case))
        await self.load_released(run, case_id)

    def translation_stated(self, run: Run, case_id: str, got: httpx.Response) -> None:
        """The report (`got`, read over HTTP) states the translation: the French opinion, its
        translator, from English, in both languages."""
        f = run.figures
        report = got.json() if got.status_code == 200 else {}
        stated = report.get("reviewer") or {}
        if (
            stated.get("translated_by") != TRANSLATOR_NAME
            or len(stated.get("translation_text") or []) != 2
        ):
            f.problem("lost", f"{case_id}: report {got.status_code} states no translation")
        elif (
            OPINION_FR["summary_for_patient"] not in got.text
            or OPINION["summary_for_patient"] in got.text
        ):
            f.problem("lost", f"{case_id}: the report is not the translated opinion")
        else:
            f.translated_reports += 1

    async def load_released(self, run: Run, case_id: str) -> None:
        """The translator's load counts none of the case's translations."""
        f = run.figures
        doc = await run.db("review")["translators"].find_one({"_id": translator_of(run)})
        rounds = await run.db("review")["assignments"].find({"case_id": case_id}).to_list()
        ids = {t["id"] for r in rounds for t in r.get("translations", [])}
        if left := [t for t in (doc or {}).get("open_translations", []) if t in ids]:
            f.problem("lost", f"{case_id}: the translator's load still counts {left}")


async def report_of(run: Run, case_id: str, case: CaseMix) -> httpx.Response:
    """The case's report as its filer reads it over HTTP."""
    reader = run.filer(case, "reports")
    return await run.retrying(lambda: reader.get(f"/v1/cases/{case_id}/report"))


def translation(doc: Document, way: str) -> Document:
    return next((dict(t) for t in doc.get("translations", []) if t["way"] == way), {})


def translator_of(run: Run) -> str:
    return f"{run.tag}-tr"


def case_summary() -> str:
    return str(case_body()["clinical_summary"])


@dataclass
class Physician(Mix):
    """The patient names their treating physician, with the `share_with_physician` consent; each
    report version the patient is told of is one copy for the physician: one send, one
    `avis.report.physician-copy-sent.v1` (on notify's outbox), and either one email with the
    secure link (by its Message-ID) or, where the institution has a FHIR endpoint, one post of
    the report's FHIR document (by its `webhook-id`, the same on every attempt); a repeat under
    the same id is counted in the figures, a copy under two ids is done twice. The endpoint is
    the run's own and fails for a spell during the faults (chaos.py)."""

    name: ClassVar[str] = "physician"
    early: ClassVar[bool] = True  # its first case (a FHIR one) is told while the faults happen

    def draw(self, nth: int, rng: random.Random) -> dict[str, Any]:
        return {"channel": "fhir" if nth % 2 == 0 else "email"}

    def consents(self, case: CaseMix) -> list[str]:
        return ["share_with_physician"]

    def filing(self, run: Run, case: CaseMix) -> dict[str, Any]:
        fhir = case.params["channel"] == "fhir"
        physician = {
            "name": PHYSICIAN_NAME,
            "institution_code": FHIR_INSTITUTION if fhir else MAIL_INSTITUTION,
            "email": physician_address(run, case),
            "language": "fr",
        }
        return {"physician": physician}

    def audit(self, run: Run, case_id: str, case: CaseMix, final: Document, events: Events) -> None:
        """One copy told per report version told to the patient, by the case's channel."""
        want = told_versions(events)
        copies = of_type(events, "report.physician-copy-sent")
        for version in want:
            n = sum(1 for e in copies if e["data"]["report_version"] == version)
            once(run, case_id, f"physician copies of version {version} told", n, 1)
        if strays := {e["data"]["report_version"] for e in copies} - set(want):
            run.figures.problem("duplicated_effects", f"{case_id}: copies of versions {strays}")
        channel = case.params["channel"]
        if others := {e["data"]["channel"] for e in copies} - {channel}:
            run.figures.problem("", f"{case_id}: physician copies by {others}, not {channel}")
        told = run.figures.physician_copies
        told[channel] = told.get(channel, 0) + len(copies)

    async def audit_reads(self, run: Run, case_id: str, case: CaseMix) -> None:
        """Each copy's send went by the case's channel: the physician's email arrived in their
        own mailbox (and nothing else did), or its document was posted under the send's id,
        and under no other id (a FHIR physician gets no email)."""
        f, channel = run.figures, case.params["channel"]
        notify = run.db("notify")
        doc = await notify["cases"].find_one({"_id": case_id}, {"notifications": 1})
        sends = [
            s
            for s in await notify["sends"]
            .find({"_id": {"$in": (doc or {}).get("notifications", [])}})
            .to_list()
            if s["template"] == "physician_report"
        ]
        if not sends:
            f.problem("lost", f"{case_id}: no copy for the physician in notify")
        if others := {s["channel"] for s in sends} - {channel}:
            f.problem("", f"{case_id}: physician copies sent by {others}, not {channel}")
        box = run.mail.get(physician_address(run, case), {})
        ids = {s["message_id"] for s in sends}
        if channel == "email":
            if unseen := [i for i in ids if not box.get(i)]:
                f.problem("lost", f"{case_id}: {len(unseen)} physician emails never arrived")
            if strays := set(box) - ids:
                f.problem("duplicated_effects", f"{case_id}: physician emails {strays} of no copy")
            return
        if box:
            f.problem("", f"{case_id}: the physician of a FHIR institution got {len(box)} emails")
        held = await run.db("reports")["cases"].find_one({"_id": case_id}, {"report_id": 1})
        report_id = (held or {}).get("report_id", "")
        for s in sends:
            # The copy of a version is its document (its identifier is the version's key).
            document = f"{report_id}:v{int(s['params'].get('version') or 1)}"
            posted = {
                p.webhook_id
                for p in run.institution.received
                if p.document == document and p.status < 300
            }
            wanted = s["message_id"].strip("<>")
            if len(posted) > 1:
                f.problem("duplicated_effects", f"{case_id}: {document} posted as {posted}")
            elif wanted not in posted:
                f.problem("lost", f"{case_id}: copy {wanted} never posted ({posted or 'none'})")


def physician_address(run: Run, case: CaseMix) -> str:
    return f"{run.tag}-dr{case.index}@cabinet.example"


@dataclass
class TranslatedReading(Mix):
    """International review read twice: the case into English for the specialist, who asks for
    a second reading; a second English reader reads the opinion as written (no translator
    between them), comments once then agrees, or agrees at once; then the opinion agreed goes
    back into French, which releases it naming both readers and its translator. The two rows'
    own steps, in that order."""

    name: ClassVar[str] = "translated-reading"
    declines: ClassVar[bool] = False  # as the translation row's (a declined round's is left open)
    early: ClassVar[bool] = True  # its first case meets the faults on the whole path
    reading: SecondReading = field(default_factory=SecondReading)
    abroad: Translations = field(default_factory=Translations)

    def draw(self, nth: int, rng: random.Random) -> dict[str, Any]:
        # At the first specialist's request: the coordinators' rule is for another specialty.
        return {"way": "first_reader", "comment": nth % self.reading.comment_every == 0}

    def specialty(self, case: CaseMix, default: str) -> str:
        return self.abroad.specialty(case, default)

    def consents(self, case: CaseMix) -> list[str]:
        return self.abroad.consents(case)

    async def before_accept(self, run: Run, case: CaseMix, aid: str, http: Any) -> None:
        await self.abroad.before_accept(run, case, aid, http)

    async def opinion(self, run: Run, case: CaseMix, aid: str, http: Any) -> None:
        """The second reading of the English opinion, then its translation back (the version
        agreed: corrected after comments), which releases it."""
        await self.reading.opinion(run, case, aid, http)
        agreed = CORRECTED if case.params["comment"] else OPINION
        body = {"opinion": OPINION_FR}
        await self.abroad.translate(run, case, aid, "to_patient", body, opinion=agreed)

    def opinion_versions(self, case: CaseMix) -> int:
        return self.reading.opinion_versions(case)

    def audit(self, run: Run, case_id: str, case: CaseMix, final: Document, events: Events) -> None:
        """Both rows' audits, and their order: the second reader is an English reader who read
        the version released, agreed before the translation back was queued, and that
        translation is of that version."""
        f = run.figures
        self.reading.audit_reading(run, case_id, case, final, events)
        self.abroad.audit_translations(run, case_id, final, events)
        released_once(run, case_id, events)
        held, latest = reading(final), len(final.get("opinions", []))
        if not str(held.get("reviewer_id")).startswith(english_reader(run, "")):
            f.problem("", f"{case_id}: second reader {held.get('reviewer_id')} reads no English")
        back = translation(final, "to_patient")
        if held.get("version") != latest or back.get("version") != latest:
            f.problem(
                "",
                f"{case_id}: read version {held.get('version')}, translated back "
                f"{back.get('version')}, latest {latest}",
            )
        agreed = [e["data"]["seq"] for e in of_type(events, "review.second-reading-agreed")]
        queued = [
            e["data"]["seq"]
            for e in of_type(events, "review.translation-queued")
            if e["data"]["translation_id"] == back.get("id")
        ]
        if agreed and queued and max(agreed) >= min(queued):
            f.problem("", f"{case_id}: translated back (seq {queued}) before agreed ({agreed})")

    async def audit_reads(self, run: Run, case_id: str, case: CaseMix) -> None:
        """The report names both readers and states the translation; the second reader's and
        the translator's loads are released."""
        f = run.figures
        got = await report_of(run, case_id, case)
        self.abroad.translation_stated(run, case_id, got)
        rounds = await run.db("review")["assignments"].find({"case_id": case_id}).to_list()
        final = max(rounds, key=lambda r: r["round"]) if rounds else {}
        first, second = final.get("reviewer_id"), reading(final).get("reviewer_id")
        stated = ((got.json() if got.status_code == 200 else {}).get("reviewer")) or {}
        if (stated.get("name"), stated.get("second_reader")) != (
            f"Reviewer {first}",
            f"Reviewer {second}",
        ) or not stated.get("second_reader_text"):
            f.problem("lost", f"{case_id}: report {got.status_code} names not both readers")
        reader = await run.db("review")["reviewers"].find_one({"_id": second})
        if reading_load_id(str(final.get("_id"))) in (reader or {}).get("open_assignments", []):
            f.problem("lost", f"{case_id}: the second reader's load still counts the reading")
        await self.abroad.load_released(run, case_id)


def english_reader(run: Run, n: int | str) -> str:
    """The id of the run's `n`th English reader (of the translation rows' specialty)."""
    return f"{run.tag}-en{n}"


MIXES: dict[str, Mix] = {
    m.name: m
    for m in (
        Information(),
        FollowUps(),
        SecondReading(),
        Translations(),
        TranslatedReading(),
        Physician(),
    )
}
PLAIN = Mix()  # the cases on no later path


@dataclass
class Shares:
    """The share of the cases each mix takes (by name); a mix with a share takes one case at
    least."""

    shares: dict[str, float] = field(
        default_factory=lambda: {
            "information": 0.12,
            "follow-up": 0.15,
            "second-reading": 0.12,
            "translation": 0.12,
            "translated-reading": 0.06,
            "physician": 0.10,
        }
    )

    def draw(self, seed: int, cases: list[CaseMix]) -> None:
        """Give each mix its cases (in a seeded order, none twice) and their parameters."""
        rng = random.Random(f"{seed}:mixes")
        order = list(cases)
        rng.shuffle(order)
        for name, share in self.shares.items():
            mix = MIXES[name]
            take = max(1, round(share * len(cases))) if share > 0 else 0
            if mix.early and order:
                soonest = min(order, key=lambda c: c.index)
                order = [soonest, *(c for c in order if c is not soonest)]
            for nth, case in enumerate(order[:take]):
                case.path, case.params = name, mix.draw(nth, rng)
                case.correct = False  # a correction is a path of its own
                case.decline = case.decline and mix.declines
            order = order[take:]


def mix_of(case: CaseMix) -> Mix:
    return MIXES.get(case.path, PLAIN)


def settings() -> dict[str, str]:
    """The services' settings the mixes need."""
    return {k: v for mix in MIXES.values() for k, v in mix.env.items()}
