"""The coordinators' view of international review's translations on the real broker and store:
the translators' directory with their loads, the open translations with their own due dates,
overdue marked, and the overdue translations' gauge (exported at 0 from the start), which counts
a translation past its due date until it is done.

Translations fall due three seconds after they are queued here.
"""

import pytest

from tests.support.basics import eventually, unique
from tests.support.problems import assert_problem
from tests.support.review import ReviewStack
from tests.support.samples import OPINION

pytestmark = pytest.mark.infra

REVIEW_SETTINGS = {"translation_due_days": 3 / 86400}
QUEUED = "avis.review.translation-queued.v1"
GAUGE = "avis_review_overdue_translations"


async def _gauge(stack: ReviewStack) -> float | None:
    async with stack.client() as http:
        metrics = (await http.get("/metrics")).text
    for line in metrics.splitlines():
        if line.startswith(GAUGE + "{") and f'service="{stack.settings.service_name}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_an_overdue_translation_is_counted_and_marked_until_done(stack: ReviewStack) -> None:
    assert await _gauge(stack) == 0, "exported at 0 before any translation"
    p = unique("car")
    await stack.add_reviewer(f"{p}-en", ["cardiology"], ["en"])
    async with stack.client() as coordinator:
        put = await coordinator.put(
            f"/v1/translators/{p}-tr",
            json={"display_name": "Tess Translator", "languages": ["fr", "en"], "capacity": 1},
        )
        assert put.status_code == 200, put.text
    case_id = await stack.submit("cardiology", language="fr", international_review=True)
    (queued,) = await stack.log.wait(case_id, QUEUED)

    async def late() -> bool:
        return await _gauge(stack) == 1

    await eventually(late, timeout=30)
    async with stack.client() as coordinator:
        listed = (await coordinator.get("/v1/translations")).json()["items"]
        (shown,) = [t for t in listed if t["id"] == queued["translation_id"]]
        assert shown["overdue"] is True and shown["translator_id"] == f"{p}-tr"
        assert (shown["from_language"], shown["to_language"]) == ("fr", "en")
        directory = (await coordinator.get("/v1/translators", params={"language": "fr"})).json()
        (me,) = [t for t in directory["items"] if t["id"] == f"{p}-tr"]
        assert (me["load"], me["capacity"], me["languages"]) == (1, 1, ["fr", "en"])
        other = (await coordinator.get("/v1/translators", params={"language": "en"})).json()
        assert f"{p}-tr" in [t["id"] for t in other["items"]]
    url = f"/v1/translations/{queued['translation_id']}"
    async with stack.client(f"{p}-tr", "translator") as translator:
        assert (await translator.post(f"{url}/take")).status_code == 200
        done = await translator.put(f"{url}/text", json={"summary": "In English."})
        assert done.status_code == 200, done.text
        assert done.json()["overdue"] is False, "done: no longer late"

    async def counted_no_more() -> bool:
        return await _gauge(stack) == 0

    await eventually(counted_no_more, timeout=30)
    # The translation back, queued by the opinion, falls due in turn and is counted again.
    assignment = await stack.assignment(case_id)
    async with stack.client(assignment["reviewer_id"], "reviewer") as specialist:
        aid = f"/v1/assignments/{assignment['id']}"
        assert (await specialist.post(f"{aid}/accept")).status_code == 200
        sent = await specialist.post(f"{aid}/opinion", json=OPINION)
        assert sent.status_code == 201, sent.text
    await stack.log.wait(case_id, QUEUED, count=2)
    await eventually(late, timeout=30)
    async with stack.client() as coordinator:
        (me,) = (await coordinator.get("/v1/translators", params={"limit": 100})).json()["items"]
        assert me["id"] == f"{p}-tr" and me["load"] == 1


async def test_the_translators_directory_refuses_bad_input_and_other_roles(
    stack: ReviewStack,
) -> None:
    async with stack.client() as coordinator:
        assert_problem(await coordinator.get("/v1/translators", params={"language": "xx"}), 422)
        assert_problem(await coordinator.get("/v1/translators", params={"limit": 0}), 422)
        assert_problem(await coordinator.get("/v1/translators", params={"cursor": "a b"}), 422)
    for role in ("reviewer", "translator", "patient"):
        async with stack.client(f"{role}-x", role) as http:  # type: ignore[arg-type]
            assert_problem(await http.get("/v1/translators"), 403)
