"""The bound on parked events, as the dead letter's reason names it."""

from avis.shared.parking import Parking
from avis.shared.settings import CommonSettings


class _Messaging:
    db: dict[str, object] = {"parked_events": object()}


def reason(hours: float) -> str:
    settings = CommonSettings(park_max_hours=hours)  # type: ignore[call-arg]
    return Parking(_Messaging(), settings).reason  # type: ignore[arg-type]


def test_the_reason_names_the_bound_in_its_own_unit() -> None:
    assert reason(24) == "unknown case after 24h"
    assert reason(1.5) == "unknown case after 90m"
    assert reason(4 / 3600) == "unknown case after 4s"
