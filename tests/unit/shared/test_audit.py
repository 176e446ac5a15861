"""The audit trail's hash chain: appended entries verify; a changed, removed (the last one
included) or reordered entry is named."""

from datetime import UTC, datetime, timedelta

import pytest

from avis.shared.audit import (
    GENESIS,
    AuditEntry,
    AuditRecord,
    Checkpoint,
    chained,
    digest,
    entry_id,
    find_break,
    off_anchor,
)
from avis.shared.audit_command import main
from avis.shared.events import TrailAnchored
from avis.shared.sealing import Keyring

CASE = "0b9c6d2e-7c55-4a57-9f55-2f4a0f3b1c11"
START = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


def chain(n: int, who: str = "sub") -> dict[int, AuditEntry]:
    """A case's trail of `n` reads, as positions -> entries."""
    found: dict[int, AuditEntry] = {}
    prev = GENESIS
    for seq in range(1, n + 1):
        record = AuditRecord(
            actor=f"{who}-{seq}", role="coordinator", action="clinical.read", purpose="break-glass"
        )
        entry = chained(CASE, seq, prev, record, START + timedelta(minutes=seq))
        found[seq] = entry
        prev = entry.hash
    return found


def test_an_appended_chain_verifies() -> None:
    found = chain(5)
    assert find_break(CASE, found, 5) is None
    assert found[1].prev == GENESIS and found[2].prev == found[1].hash
    assert found[3].id == entry_id(CASE, 3) == f"{CASE}:0000000003"


def test_the_hash_survives_a_round_trip_through_the_store_document() -> None:
    entry = chain(1)[1]
    back = AuditEntry.model_validate(entry.to_doc())
    assert digest(back) == entry.hash


def test_a_changed_entry_is_named() -> None:
    found = chain(5)
    found[3] = found[3].model_copy(update={"role": "patient"})
    broken = find_break(CASE, found, 5)
    assert broken is not None and (broken.seq, broken.kind) == (3, "changed")


def test_a_removed_entry_is_named() -> None:
    found = chain(5)
    del found[2]
    broken = find_break(CASE, found, 5)
    assert broken is not None and (broken.seq, broken.kind) == (2, "removed")


def test_a_removed_last_entry_is_named_by_the_head() -> None:
    found = chain(5)
    del found[5]
    broken = find_break(CASE, found, 5)
    assert broken is not None and (broken.seq, broken.kind) == (5, "removed")


def test_two_swapped_entries_are_named() -> None:
    found = chain(5)
    second, fourth = found[2], found[4]
    found[2] = fourth.model_copy(update={"id": second.id})
    found[4] = second.model_copy(update={"id": fourth.id})
    broken = find_break(CASE, found, 5)
    assert broken is not None and (broken.seq, broken.kind) == (2, "reordered")


def test_a_rechained_swap_is_named_too() -> None:
    """Swapped and renumbered, each with a fresh hash: the next entry's `prev` gives it away."""
    found = chain(4)
    first, second = found[2], found[3]
    found[2] = second.model_copy(update={"seq": 2, "id": entry_id(CASE, 2)})
    found[2] = found[2].model_copy(update={"hash": digest(found[2])})
    found[3] = first.model_copy(update={"seq": 3, "id": entry_id(CASE, 3)})
    found[3] = found[3].model_copy(update={"hash": digest(found[3])})
    broken = find_break(CASE, found, 4)
    assert broken is not None and (broken.seq, broken.kind) == (2, "reordered")


def test_the_command_needs_a_service() -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["verify"])
    assert exit_.value.code == 2


def test_verify_needs_the_broker_of_the_anchors_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AVIS_KAFKA_BOOTSTRAP", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["verify", "--service", "intake"])
    assert exit_.value.code == 2
    assert "AVIS_KAFKA_BOOTSTRAP" in capsys.readouterr().err


def anchored(entry: AuditEntry) -> TrailAnchored:
    """The anchor a service published of `entry` as its case's head."""
    return TrailAnchored(
        case_id=CASE, service="intake", seq=entry.seq, hash=entry.hash, anchored_at=START
    )


def test_a_chain_at_or_past_its_anchor_matches_it() -> None:
    found = chain(5)
    assert off_anchor(CASE, found, anchored(found[5])) is None
    assert off_anchor(CASE, found, anchored(found[3])) is None  # appended to since


def test_a_chain_rewritten_whole_holds_alone_and_not_against_its_anchor() -> None:
    truth, rewritten = chain(5), chain(5, who="someone-else")
    assert find_break(CASE, rewritten, 5) is None  # every hash recomputed: the chain holds
    broken = off_anchor(CASE, rewritten, anchored(truth[4]))
    assert broken is not None and (broken.seq, broken.kind) == (4, "rewritten")


def test_a_chain_cut_before_its_anchor_is_named() -> None:
    found = chain(5)
    cut = {s: e for s, e in found.items() if s <= 3}
    broken = off_anchor(CASE, cut, anchored(found[5]))
    assert broken is not None and (broken.seq, broken.kind) == (5, "removed")
    broken = off_anchor(CASE, {}, anchored(found[2]))  # a trail removed whole
    assert broken is not None and (broken.seq, broken.kind) == (2, "removed")


def test_an_anchor_pruned_away_is_proved_by_the_checkpoint() -> None:
    found = chain(5)
    keyring = Keyring.parse("k1:" + "A" * 43 + "=")
    mark = Checkpoint.signed(found[3], START, keyring)
    rest = {s: e for s, e in found.items() if s > 3}
    assert off_anchor(CASE, rest, anchored(found[2]), mark) is None
    assert off_anchor(CASE, rest, anchored(found[3]), mark) is None
    other = chain(3, who="someone-else")[3]
    broken = off_anchor(CASE, rest, anchored(other), mark)
    assert broken is not None and (broken.seq, broken.kind) == (3, "rewritten")
