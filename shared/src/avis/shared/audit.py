"""The access audit trail: every read and write of a case's health data, one entry each, in an
append-only chain per case that shows a changed, removed or reordered entry.

An entry says who (a pseudonymous subject id and a role), what (an action code and, for a
record, its id), which case, when, why (a purpose code and, for a coordinator's break-glass
read, the reason, sealed: a reason may hold health data) and the outcome (refusals included).
Nothing identifying or clinical is written in clear.

Within the store contract (DESIGN.md section 4):
- one chain per case; entry `_id` = `<case_id>:<seq>` (zero-padded, from 1), so a case's
  entries are read by `_id` only; a seq is claimed by inserting it (a duplicate key means a
  racing writer: take the next one);
- each entry holds the previous entry's hash (`prev`, `GENESIS` for the first) and its own
  `hash`: SHA-256 over the canonical JSON of the entry with `prev`;
- a head document per case (`audit_heads`, `_id` = case id) keeps the last seq and hash, so
  `verify` knows how many entries there should be (a removed last entry shows) and an append
  the process knows nothing of starts there. The heads of the cases appended to are written
  with their anchors (below), every `AVIS_AUDIT_ANCHOR_SECONDS`, 50 a request (`keep`), not
  at each append: until then, as after a crash, a head is behind the true end. It is written
  by `_id` alone (a condition on `seq` beside it made the local store read every head on each
  append), so a head behind the true end (not written yet, a crash, or an earlier entry's head
  written last by another instance) is stepped past by probing the next `_id`s, by appends,
  pages and `verify` alike: a last entry removed before its head was written is found by its
  anchor no more than by its head (both come in the same round);
- each process remembers the last entry it wrote or read of its most recent cases (`REMEMBERED`
  of them, least recently used forgotten), and appends after it without reading anything: the
  insert, one request (of a case it knows nothing of, the first entry is tried: a new case's
  first entry costs the same). A memory another instance has overtaken meets a
  duplicate key, and the append reads the head and tries after it (or, where the head lags
  too, probes past it), as after any racing writer. A repeat is folded only into the true last
  entry: when the memory says it repeats, the next `_id` is probed first (another instance may
  have written after it);
- the caller serialises appends to one case within the process (the case's lock); across
  instances the insert of a natural `_id` decides.

`verify` walks a case's entries by `_id` and names the first break. Verifying every case reads
all head documents: a scan, acceptable in this offline command only, never on a hot path.

The trail is kept a year (`avis-audit prune --days 365`, from a scheduler): the CNIL's
recommendation on access logs (2021) is six months to a year, and a year lets a patient see every
access around a case's whole course, follow-ups included. Pruning removes a prefix of a case's
chain, after checking it, and leaves a checkpoint (`audit_checkpoints`, `_id` = case id): the
seq and hash of the last entry removed, signed with a key derived from the sealing keys (HMAC).
`verify` checks the signature, then the chain from the checkpoint on, so what remains is still
proved; a checkpoint moved forward without the key, to hide entries, does not verify.

A chain rewritten whole (every hash recomputed) holds by itself, so each head is also anchored
outside the store (avis.shared.anchors): the cases appended to are remembered in memory, and
every `AVIS_AUDIT_ANCHOR_SECONDS` their heads are published on the compacted `audit-anchored`
topic. `verify` given those anchors checks that the entry each one names still has the hash
anchored, and that a trail anchored is still there. A copy that stops before its next round
leaves those heads unanchored until the case's next entry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pymongo import ReplaceOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from avis.shared.events import TrailAnchored
from avis.shared.mongo import Document, Stored, by_ids
from avis.shared.sealing import Keyring, Sealed

TRAIL = "audit_trail"
# Heads written a request (`keep`): the local store stalls on a bulk write of many updates of
# documents that exist (docs/store-contract.md), so an anchoring round's heads go in chunks.
KEEP_AT_ONCE = 50
HEADS = "audit_heads"
CHECKPOINTS = "audit_checkpoints"
CHECKPOINT_PURPOSE = "avis-audit-checkpoint"
GENESIS = "0" * 64
SEQ_DIGITS = 10
# How many entries are read together.
BATCH = 200
# How many cases' last entries a process remembers (a few hundred bytes each).
REMEMBERED = 4096

Outcome = Literal["allowed", "refused"]
BreakKind = Literal["changed", "removed", "reordered", "rewritten"]


def entry_id(case_id: str, seq: int) -> str:
    """The `_id` of a case's `seq`-th entry (zero-padded: ids sort by seq)."""
    return f"{case_id}:{seq:0{SEQ_DIGITS}d}"


class AuditRecord(BaseModel):
    """What happened, as the caller tells it; the trail adds the case, seq, time and chain."""

    model_config = ConfigDict(frozen=True)

    actor: str
    role: str
    action: str
    target: str | None = None
    outcome: Outcome = "allowed"
    status: int = 200
    purpose: str
    reason: Sealed | None = None


class AuditEntry(Stored):
    """One stored entry of a case's trail."""

    id: str = Field(alias="_id")
    case_id: str
    seq: int
    at: datetime
    actor: str
    role: str
    action: str
    target: str | None = None
    outcome: Outcome
    status: int
    purpose: str
    reason: Sealed | None = None
    prev: str
    hash: str = ""

    def fhir(self, observer: str) -> Document:
        """This entry as a FHIR R4B `AuditEvent`, as `observer` (the service) recorded it.

        Who is the caller's pseudonymous subject id and role; what, the case and, for a record,
        its id; the chain's hashes go along, so a copy of the export can be checked against
        the trail. A coordinator's stated reason stays out: it may hold health data.
        """
        entities: list[Document] = [
            {
                "what": {"identifier": {"system": "urn:avis:case", "value": self.case_id}},
                "type": _coding(ENTITY_TYPES, "2", "System Object"),
                "detail": [
                    {"type": "hash", "valueString": self.hash},
                    {"type": "prev", "valueString": self.prev},
                ],
            }
        ]
        if self.target is not None:
            entities.append(
                {"what": {"identifier": {"system": "urn:avis:record", "value": self.target}}}
            )
        purposes = [{"system": "urn:avis:purpose", "code": self.purpose}]
        if self.purpose in ACT_REASONS:
            purposes.insert(0, {"system": ACT_REASON, "code": ACT_REASONS[self.purpose]})
        return {
            "resourceType": "AuditEvent",
            "id": f"{self.case_id}-{self.seq}",
            "type": _coding(EVENT_TYPES, "rest", "RESTful Operation"),
            "subtype": [{"system": "urn:avis:audit-action", "code": self.action}],
            "action": fhir_action(self.action),
            "recorded": self.at.isoformat(),
            "outcome": "0" if self.outcome == "allowed" else "4",
            "outcomeDesc": f"{self.outcome} ({self.status})",
            "purposeOfEvent": [{"coding": purposes}],
            "agent": [
                {
                    "type": {"coding": [{"system": "urn:avis:role", "code": self.role}]},
                    "who": {"identifier": {"system": "urn:avis:subject", "value": self.actor}},
                    "requestor": True,
                }
            ],
            "source": {
                "site": "avis",
                "observer": {"display": observer},
                "type": [_coding(SOURCE_TYPES, "4", "Application Server")],
            },
            "entity": entities,
        }


EVENT_TYPES = "http://terminology.hl7.org/CodeSystem/audit-event-type"
ENTITY_TYPES = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
SOURCE_TYPES = "http://terminology.hl7.org/CodeSystem/security-source-type"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
# Our purposes that HL7's purposes of use name too: a break-glass read is emergency treatment.
ACT_REASONS = {"break-glass": "ETREAT", "assigned-review": "TREAT", "coordination": "HOPERAT"}


def _coding(system: str, code: str, display: str) -> Document:
    return {"system": system, "code": code, "display": display}


def fhir_action(action: str) -> str:
    """The FHIR action code of one of our actions: Create, Read, Update, Delete."""
    verb = action.rsplit(".", 1)[-1]
    return {"read": "R", "list": "R", "create": "C", "add": "C", "delete": "D"}.get(verb, "U")


def fhir_bundle(entries: Sequence[AuditEntry], observer: str, next_url: str | None) -> Document:
    """Entries as a FHIR R4B `collection` Bundle of `AuditEvent`s, with the next page's link."""
    bundle: Document = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": datetime.now(UTC).isoformat(),
        "entry": [
            {"fullUrl": f"urn:avis:audit:{e.case_id}:{e.seq}", "resource": e.fhir(observer)}
            for e in entries
        ],
    }
    if next_url is not None:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


class AuditHead(Stored):
    """The last entry of a case's trail as its writer knew it: seq and hash, and who did what
    when (so a repeat of the same read can be folded into it without reading the entry)."""

    id: str = Field(alias="_id")
    seq: int
    hash: str
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    outcome: Outcome | None = None
    at: datetime | None = None

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditHead:
        """The head that names `entry` as the last of its chain."""
        return cls(
            id=entry.case_id,
            seq=entry.seq,
            hash=entry.hash,
            actor=entry.actor,
            action=entry.action,
            target=entry.target,
            outcome=entry.outcome,
            at=entry.at,
        )

    def repeats(self, record: AuditRecord, at: datetime, within: timedelta) -> bool:
        """Whether `record` at `at` is the same access as this last entry, `within` of it."""
        same = (self.actor, self.action, self.target, self.outcome) == (
            record.actor,
            record.action,
            record.target,
            record.outcome,
        )
        return same and self.at is not None and timedelta(0) <= at - self.at < within


class Checkpoint(Stored):
    """Where a pruned chain goes on: its last removed entry's seq and hash, signed."""

    id: str = Field(alias="_id")
    seq: int
    hash: str
    at: datetime
    kid: str
    mac: str

    @classmethod
    def signed(cls, last: AuditEntry, at: datetime, keyring: Keyring) -> Checkpoint:
        """The checkpoint after `last`, signed with the keyring's current key."""
        kid, key = keyring.derive(CHECKPOINT_PURPOSE)
        mac = _mac(key, last.case_id, last.seq, last.hash)
        return cls(id=last.case_id, seq=last.seq, hash=last.hash, at=at, kid=kid, mac=mac)

    def holds(self, keyring: Keyring | None) -> bool:
        """Whether its signature is right (False without the key it was signed with)."""
        if keyring is None or self.kid not in keyring.kids:
            return False
        _, key = keyring.derive(CHECKPOINT_PURPOSE, self.kid)
        return hmac.compare_digest(self.mac, _mac(key, self.id, self.seq, self.hash))


def _mac(key: bytes, case_id: str, seq: int, hash_: str) -> str:
    return hmac.new(key, f"{case_id}:{seq}:{hash_}".encode(), hashlib.sha256).hexdigest()


def canonical(entry: AuditEntry) -> bytes:
    """The bytes an entry's hash covers: every field but the hash and the `_id` (its case and
    seq are covered: an entry moved to another `_id` is a reorder, not a change), as sorted
    compact JSON (times as epoch milliseconds, so a time read back hashes as written)."""
    fields: dict[str, Any] = entry.model_dump(exclude={"id", "hash"}, exclude_none=True)
    fields["at"] = round(entry.at.timestamp() * 1000)
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(entry: AuditEntry) -> str:
    """The hash an entry should carry: SHA-256 over its canonical JSON, `prev` included."""
    return hashlib.sha256(canonical(entry)).hexdigest()


def chained(case_id: str, seq: int, prev: str, record: AuditRecord, at: datetime) -> AuditEntry:
    """The `seq`-th entry of a case, after the entry whose hash is `prev`."""
    entry = AuditEntry(
        id=entry_id(case_id, seq), case_id=case_id, seq=seq, at=at, prev=prev, **dict(record)
    )
    return entry.model_copy(update={"hash": digest(entry)})


@dataclass(frozen=True)
class Break:
    """The first place a case's chain does not hold: which entry (its position) and how."""

    case_id: str
    seq: int
    kind: BreakKind
    detail: str

    def __str__(self) -> str:
        return f"case {self.case_id}: entry {self.seq} {self.kind} ({self.detail})"


def find_break(
    case_id: str,
    found: Mapping[int, AuditEntry],
    head: int,
    *,
    after: int = 0,
    prev: str = GENESIS,
) -> Break | None:
    """The first break of a case's chain: `found` maps positions to the entries stored there,
    `head` is the number of entries the head document counts; with a checkpoint, the chain
    goes on `after` its seq from its hash `prev`."""
    last = max([head, *found])
    for seq in range(after + 1, last + 1):
        entry = found.get(seq)
        if entry is None:
            return Break(case_id, seq, "removed", f"no entry {seq} of {last}")
        if digest(entry) != entry.hash:
            return Break(case_id, seq, "changed", "its content does not match its hash")
        if entry.case_id != case_id or entry.seq != seq:
            return Break(case_id, seq, "reordered", f"holds entry {entry.seq} of its chain")
        if entry.prev != prev:
            return Break(case_id, seq, "reordered", "it does not follow the entry before it")
        prev = entry.hash
    return None


def off_anchor(
    case_id: str,
    found: Mapping[int, AuditEntry],
    anchor: TrailAnchored,
    mark: Checkpoint | None = None,
) -> Break | None:
    """Where a chain that holds by itself departs from its last anchor: the entry anchored is
    gone, or hashes otherwise (the chain was rewritten); None when it matches, or when it was
    pruned away (the checkpoint proves what it covered)."""
    when = f"anchored {anchor.anchored_at:%Y-%m-%dT%H:%M:%SZ}"
    if mark is not None and anchor.seq <= mark.seq:
        if anchor.seq == mark.seq and anchor.hash != mark.hash:
            detail = f"its checkpoint is not the entry {when}"
            return Break(case_id, anchor.seq, "rewritten", detail)
        return None
    entry = found.get(anchor.seq)
    if entry is None:
        end = max(found, default=mark.seq if mark else 0)
        return Break(case_id, anchor.seq, "removed", f"the chain ends at {end}, {when}")
    if entry.hash != anchor.hash:
        return Break(case_id, anchor.seq, "rewritten", f"its hash is not the one {when}")
    return None


class AuditTrail:
    """The trail's collections and every operation on them."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.trail = db[TRAIL]
        self.heads = db[HEADS]
        self.checkpoints = db[CHECKPOINTS]
        # The cases appended to since their heads were last anchored (avis.shared.anchors).
        self.unanchored: set[str] = set()
        # The last entry this process wrote or read of its most recent cases (may lag).
        self._ends: OrderedDict[str, AuditHead] = OrderedDict()

    async def head(self, case_id: str) -> AuditHead | None:
        """A case's head document (None: no entry yet)."""
        doc = await self.heads.find_one({"_id": case_id})
        return AuditHead.model_validate(doc) if doc else None

    async def checkpoint(self, case_id: str) -> Checkpoint | None:
        """Where a case's pruned chain goes on (None: never pruned)."""
        doc = await self.checkpoints.find_one({"_id": case_id})
        return Checkpoint.model_validate(doc) if doc else None

    async def _entry(self, case_id: str, seq: int) -> AuditEntry | None:
        doc = await self.trail.find_one({"_id": entry_id(case_id, seq)})
        return AuditEntry.model_validate(doc) if doc else None

    async def append(
        self, case_id: str, record: AuditRecord, at: datetime, *, fold: timedelta | None = None
    ) -> AuditEntry | None:
        """Add an entry at the end of a case's chain. The caller holds the case's lock; an entry
        another instance wrote at the same seq (duplicate key) is stepped past. With `fold`, the
        same access as the last entry, by the same person, within `fold` of it, is that entry
        (None: nothing written): a page that polls a status leaves one entry, not one a poll.

        It starts from the last entry this process remembers of the case; of a case it knows
        nothing of, a repeat to fold starts from the head document and the entries past it,
        anything else is tried as the first entry (a new case's, the usual cold start). Either
        may be behind the true end, which the insert finds out."""
        end = self._ends.get(case_id)
        looked = end is None and fold is not None
        if looked:  # the true end, from the head (which may lag: it comes with the anchors)
            end = await self._last(case_id, await self.head(case_id))
        if end is not None and fold is not None and end.repeats(record, at, fold):
            # Folded only into the true last entry: one written since would be dropped.
            end = end if looked else await self._last(case_id, end)
            if end is not None and end.repeats(record, at, fold):
                return None
        while True:
            seq, prev = (end.seq, end.hash) if end else (0, GENESIS)
            entry = chained(case_id, seq + 1, prev, record, at)
            try:
                await self.trail.insert_one(entry.to_doc())
                break
            except DuplicateKeyError:  # a racing writer took this seq: go on after it
                head = await self.head(case_id)
                if head is not None and head.seq > seq:
                    end = head  # the next insert finds out whether it is the end
                else:  # the head lags too: step over what is past it
                    end = await self._last(case_id, end)
        self._remember(AuditHead.of(entry))
        self.unanchored.add(case_id)  # its head is written with its anchor (`keep`)
        return entry

    def _remember(self, end: AuditHead | None) -> AuditHead | None:
        """Remember `end` as its case's last entry (unless one further on is remembered), as
        the most recently used."""
        if end is not None:
            self._ends[end.id] = _later(self._ends.get(end.id), end) or end
            self._ends.move_to_end(end.id)
            if len(self._ends) > REMEMBERED:
                self._ends.popitem(last=False)
        return end

    def take_unanchored(self) -> list[str]:
        """The cases appended to since the last call (to anchor now), forgotten here."""
        taken, self.unanchored = sorted(self.unanchored), set()
        return taken

    async def heads_of(self, case_ids: Sequence[str]) -> list[AuditHead]:
        """The true ends of these cases' chains: from their heads, read together by `_id`, or
        the last entry this process remembers where that is further on; then one look past
        every end at once (two requests in all), and one by one past the few that lag."""
        docs = await by_ids(self.heads, case_ids)
        heads = [AuditHead.model_validate(d) if d else None for d in docs]
        known = [_later(h, self._ends.get(c)) for c, h in zip(case_ids, heads, strict=True)]
        past = [entry_id(c, (k.seq if k else 0) + 1) for c, k in zip(case_ids, known, strict=True)]
        beyond = await by_ids(self.trail, past)
        ends = [
            self._remember(k)
            if b is None
            else await self._last(c, AuditHead.of(AuditEntry.model_validate(b)))
            for c, k, b in zip(case_ids, known, beyond, strict=True)
        ]
        return [h for h in ends if h is not None]

    async def keep(self, case_ids: Sequence[str]) -> list[AuditHead]:
        """Write the heads of these cases at their chains' true ends, `KEEP_AT_ONCE` a request
        (by `_id` alone: a head written back behind another instance's is stepped past);
        returns them."""
        heads = await self.heads_of(case_ids)
        for start in range(0, len(heads), KEEP_AT_ONCE):
            chunk = heads[start : start + KEEP_AT_ONCE]
            await self.heads.bulk_write(
                [ReplaceOne({"_id": h.id}, h.to_doc(), upsert=True) for h in chunk]
            )
        return heads

    async def _last(self, case_id: str, head: AuditHead | None) -> AuditHead | None:
        """The true end of a case's chain from its head document: the entries past a head that
        lags behind are stepped over, one `_id` each (none in the usual case)."""
        seq = head.seq if head else 0
        while (beyond := await self._entry(case_id, seq + 1)) is not None:
            head, seq = AuditHead.of(beyond), beyond.seq
        return self._remember(head)

    async def _batch(self, case_id: str, seqs: Sequence[int]) -> dict[int, AuditEntry]:
        """Entries by position, read by `_id` in one request."""
        docs = await by_ids(self.trail, [entry_id(case_id, s) for s in seqs])
        return {s: AuditEntry.model_validate(d) for s, d in zip(seqs, docs, strict=True) if d}

    async def page(self, case_id: str, *, after: int, limit: int) -> tuple[list[AuditEntry], int]:
        """Up to `limit` entries of a case after position `after`, in order, each read by `_id`,
        and the last position of the chain (its head's, or past it where the head lags)."""
        head = await self._last(case_id, await self.head(case_id))
        last = head.seq if head else 0
        mark = await self.checkpoint(case_id) if head else None
        after = max(after, mark.seq if mark else 0)  # a pruned prefix is not paged through
        seqs = list(range(after + 1, min(last, after + limit) + 1))
        found = await self._batch(case_id, seqs)
        return [found[s] for s in seqs if s in found], last

    async def verify(
        self, case_id: str, keyring: Keyring | None = None, anchor: TrailAnchored | None = None
    ) -> Break | None:
        """The first break of a case's chain, or None when every entry is in place (from its
        checkpoint on, whose signature `keyring` checks) and, given its last `anchor`, still
        holds the entry anchored."""
        head = await self.head(case_id)
        last = head.seq if head else 0
        after, prev = 0, GENESIS
        mark = await self.checkpoint(case_id)
        if mark is not None:
            if not mark.holds(keyring):
                return Break(
                    case_id, mark.seq, "changed", "its checkpoint's signature does not hold"
                )
            after, prev = mark.seq, mark.hash
        found: dict[int, AuditEntry] = {}
        for start in range(after + 1, last + 1, BATCH):
            found |= await self._batch(case_id, range(start, min(last, start + BATCH - 1) + 1))
        seq = max(last, after)
        while (beyond := await self._entry(case_id, seq + 1)) is not None:  # a lagging head
            seq += 1
            found[seq] = beyond
        found = {s: e for s, e in found.items() if s > after}  # left by a pruning cut short
        broken = find_break(case_id, found, last, after=after, prev=prev)
        if broken is None and anchor is not None:
            return off_anchor(case_id, found, anchor, mark)
        return broken

    async def prune(self, case_id: str, before: datetime, keyring: Keyring) -> int:
        """Remove a case's entries recorded before `before`, oldest first, checked on the way
        (a break stops it: nothing is pruned past what does not hold); returns how many. The
        signed checkpoint is written before any entry goes, so a pruning cut short leaves
        entries it already covers, which `verify` and the pages pass over."""
        mark = await self.checkpoint(case_id)
        after, prev = (mark.seq, mark.hash) if mark else (0, GENESIS)
        older: dict[int, AuditEntry] = {}
        seq = after + 1
        while (entry := await self._entry(case_id, seq)) is not None and entry.at < before:
            older[seq] = entry
            seq += 1
        broken = find_break(case_id, older, seq - 1, after=after, prev=prev)
        gone = [e for s, e in sorted(older.items()) if broken is None or s < broken.seq]
        if not gone:
            return 0
        at = datetime.now(UTC)
        written = Checkpoint.signed(gone[-1], at, keyring).to_doc()
        await self.checkpoints.replace_one({"_id": case_id}, written, upsert=True)
        for entry in gone:
            await self.trail.delete_one({"_id": entry.id})
        return len(gone)

    async def cases(self) -> AsyncIterator[str]:
        """Every case with a trail (reads all head documents: for the offline `verify` only)."""
        async for doc in self.heads.find({}, {"_id": 1}).sort("_id", 1):
            yield str(doc["_id"])


def _later(one: AuditHead | None, other: AuditHead | None) -> AuditHead | None:
    """Whichever of two heads of a case is further on the chain."""
    if one is None or (other is not None and other.seq > one.seq):
        return other
    return one


async def verify_all(
    trail: AuditTrail,
    case_ids: Sequence[str] = (),
    keyring: Keyring | None = None,
    anchors: Mapping[str, TrailAnchored] | None = None,
) -> list[Break]:
    """The breaks of the given cases' chains (none given: every case's, and every case
    anchored, so that a trail removed whole is found too)."""
    breaks: list[Break] = []
    anchors = anchors or {}
    ids = list(case_ids) or sorted({case_id async for case_id in trail.cases()} | set(anchors))
    for case_id in ids:
        found = await trail.verify(case_id, keyring, anchors.get(case_id))
        if found is not None:
            breaks.append(found)
    return breaks


async def prune_all(trail: AuditTrail, before: datetime, keyring: Keyring) -> int:
    """Prune every case's trail of what was recorded before `before`; how many entries went."""
    return sum([await trail.prune(case_id, before, keyring) async for case_id in trail.cases()])
