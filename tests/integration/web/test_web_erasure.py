"""A coordinator's legal hold and erasure of a case, on the board's case page, against the four
services and web as processes on the test stack: a hold defers the erasure (intake's refusal in
plain words), lifting it lets the erasure through once the case's reference is typed, and the
case then shows as erased, to the coordinator and to its patient, while the board keeps its
row. Patients and specialists never reach these forms."""

from typing import Any

import pytest

from tests.support.basics import unique
from tests.support.browser import file_case
from tests.support.stack import ServiceStack
from tests.support.web import signed_in

pytestmark = pytest.mark.infra


@pytest.fixture
def stack(web_services: ServiceStack) -> ServiceStack:
    return web_services


async def case_in_intake(stack: ServiceStack, case_id: str) -> dict[str, Any]:
    """The case as intake answers a coordinator, past web."""
    async with stack.client("intake", "coordinator-1", "coordinator") as intake:
        found = await intake.get(f"/v1/cases/{case_id}")
    assert found.status_code == 200, found.text
    return dict(found.json())


async def test_a_hold_refuses_the_erasure_until_it_is_lifted_then_the_case_is_erased(
    stack: ServiceStack,
) -> None:
    case_id, reference = await file_case(stack, specialty="dermatology")
    path = f"/board/cases/{case_id}"
    held_because = unique("Dispute with the clinic")
    async with signed_in(stack, "coordinator-1") as browser:
        page = await browser.get(path)
        assert "Set a legal hold" in page.text and "Erase for good" in page.text
        assert "This cannot be undone." in page.text
        short = await browser.submit(f"{path}/hold", {"reason": "no"})  # intake's 422
        assert short.status_code == 200 and "must be 3 to 500 characters" in short.text
        held = await browser.submit(f"{path}/hold", {"reason": held_because})
        assert held.url.path == path and "The case is under a legal hold." in held.text
        assert "A legal hold stands since" in held.text and "Lift the legal hold" in held.text
        assert "Erase for good" not in held.text  # no erasure offered while the hold stands
        trail = held.text.split("Who looked at this case", 1)[1]
        assert "put the data under a legal hold" in trail and held_because in trail  # and why

        # A page opened before the hold was set (by another coordinator) posts the erasure.
        data = {"reason": "The patient asked by phone", "reference": reference}
        refused = await browser.submit(f"{path}/erase", data)
        assert refused.status_code == 200, refused.text
        assert "A legal hold stands on this case: it cannot be erased" in refused.text
        assert (await case_in_intake(stack, case_id))["erased_at"] is None

        lifted = await browser.submit(f"{path}/release", {"reason": "The dispute is settled"})
        assert "The legal hold is lifted." in lifted.text and "Erase for good" in lifted.text
        unconfirmed = await browser.submit(f"{path}/erase", data | {"reference": "AV-0000"})
        assert "The case was not erased: type its reference exactly" in unconfirmed.text
        assert (await case_in_intake(stack, case_id))["erased_at"] is None
        erased = await browser.submit(f"{path}/erase", data | {"reference": reference.lower()})
        assert erased.url.path == path and "The case&#39;s data is erased." in erased.text
        assert "nobody can open it any more" in erased.text
        for form in ("clinical", "hold", "release", "erase"):
            assert f'action="{path}/{form}"' not in erased.text, form
        case = await case_in_intake(stack, case_id)
        assert case["erased_at"] is not None and not case["legal_hold"]

        # Too late for a hold: intake's 410, in plain words.
        late = await browser.submit(f"{path}/hold", {"reason": held_because})
        assert "This case&#39;s data was erased: nobody can open it any more." in late.text
        board = await browser.get("/board")
        assert board.status_code == 200 and reference in board.text  # the skeleton's row
        assert any("Data erased" in row for row in rows_of(board.text, reference)), "marked"
    async with signed_in(stack, "patient-1") as patient:
        mine = await patient.get(f"/cases/{case_id}")
        assert mine.status_code == 200 and "by our coordination team" in mine.text
        listed = await patient.get("/cases")
        assert any("Data erased" in row for row in rows_of(listed.text, reference))


def rows_of(page: str, reference: str) -> list[str]:
    """The table rows of a page that name the case `reference`."""
    return [row for row in page.split("<tr") if reference in row]


@pytest.mark.parametrize("identity", ["patient-1", "reviewer-1"])
async def test_patients_and_specialists_never_reach_the_hold_and_erasure_forms(
    stack: ServiceStack, identity: str
) -> None:
    case_id, reference = await file_case(stack, specialty="dermatology")  # patient-1's own
    path = f"/board/cases/{case_id}"
    async with signed_in(stack, identity) as browser:
        page = await browser.get(path)
        assert page.status_code == 403 and "Erase for good" not in page.text
        reason = {"reason": "Not theirs to decide"}
        for action, data in (
            ("hold", reason),
            ("release", reason | {"confirm": "yes"}),
            ("erase", reason | {"reference": reference}),
        ):
            refused = await browser.submit(f"{path}/{action}", data)
            assert refused.status_code == 403, (action, refused.status_code)
            assert not refused.history, action  # refused by web itself, not on the next page
            assert "You are not allowed" in refused.text
    case = await case_in_intake(stack, case_id)
    assert case["erased_at"] is None and not case["legal_hold"]
