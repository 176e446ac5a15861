"""International review's translation step: a person's work, both ways, with its own role
(translator), queue, due date (`translation_due_days`) and timeline entries.

When a case is matched on the international path (`rules.Rule.INTERNATIONAL_NO_READER_AVAILABLE`)
its round is written with a translation "to the specialist" (the clinical summary, patient's
language -> specialist's) and its `avis.review.translation-queued.v1` event; the specialist
accepts the case only once it is done (`rules.check_specialist_may_start`) and reads the
translation. Their opinion is then kept in review, and a translation "back" (the opinion,
specialist's language -> patient's) is queued instead of `avis.review.completed.v1`, which the
translator's submission writes, carrying the translated opinion and who translated it from
which language (`avis.review.translation-done.v1` first, in one write).

A translation lives on its assignment, whose outbox carries its events, and counts in its
translator's load until done. Its texts are health data: sealed under the case's key at rest
(bound to the translation's id), never on Kafka (the completed opinion travels sealed, as
always); every read and write by a person is an entry of the case's access trail. Every write
runs inside the matcher's section and holds the assignment, as every write of an assignment's
state does (service.py's docstring).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import structlog

from avis.review import contacts, rules
from avis.review.matching import Matcher
from avis.review.models import (
    Opinion,
    Translation,
    TranslationBody,
    TranslationPage,
    TranslationState,
    TranslationTexts,
    TranslationWay,
    Translator,
    TranslatorIn,
)
from avis.review.second_reading import SecondReadings
from avis.review.store import AssignmentDoc, Store, TranslationEntry, TranslatorDoc
from avis.shared.access_log import TrailWriter, check_reason
from avis.shared.case_keys import CaseKeys
from avis.shared.clock import now
from avis.shared.emit import Emitter
from avis.shared.envelope import Event
from avis.shared.events import (
    CaseSummary,
    Language,
    ProfessionalContact,
    ReviewCompleted,
    TranslationDone,
    TranslationQueued,
)
from avis.shared.mongo import AggregateLocks
from avis.shared.problems import Problem, not_found
from avis.shared.sealing import Keyring, SealingError
from avis.shared.security import Principal

log = structlog.get_logger("avis.review")


@dataclass(frozen=True)
class Queued:
    """A translation to write with its round, and its `translation-queued` event."""

    entry: TranslationEntry
    event: Event


class Translations:
    """The translation step: queueing both ways, the translators' directory and queue, taking
    and writing a translation, and its reads."""

    def __init__(
        self,
        *,
        store: Store,
        locks: AggregateLocks,
        emitter: Emitter,
        keys: CaseKeys,
        matcher: Matcher,
        access: TrailWriter,
        due_days: float,
    ) -> None:
        self.store = store
        self.locks = locks
        self.emitter = emitter
        self.keys = keys
        self.matcher = matcher
        self.access = access
        self.due_days = due_days
        matcher.translating = self  # an international round is written with its translation

    @classmethod
    def beside(cls, second: SecondReadings, *, due_days: float) -> Translations:
        """The translation step over the same store, locks, emitter, keys, matcher and trail
        as the second reading's."""
        return cls(
            store=second.store,
            locks=second.locks,
            emitter=second.emitter,
            keys=second.keys,
            matcher=second.matcher,
            access=second.access,
            due_days=due_days,
        )

    # --- the translators' directory -----------------------------------------------------------

    async def put_translator(self, translator_id: str, body: TranslatorIn) -> Translator:
        """Add or replace a translator (their load is kept)."""
        contact = contacts.sealed_translator_contact(self.keys.keyring, translator_id, body)
        doc = TranslatorDoc.model_validate(
            {
                **body.model_dump(exclude={"email"}),
                "_id": translator_id,
                "contact": contact,
                "updated_at": now(),
            }
        )
        await self.store.translations.put_translator(doc)
        stored = await self.store.translations.translator(translator_id)
        return (stored or doc).view()

    # --- queueing -------------------------------------------------------------------------------

    async def first(self, doc: AssignmentDoc, *, at: datetime, seq: int) -> Queued:
        """The translation to the specialist of a new international round (sequence `seq`);
        the caller writes it with the round, then `counted`."""
        return await self._queue(doc, TranslationWay.TO_SPECIALIST, at=at, seq=seq)

    async def back(
        self, doc: AssignmentDoc, version: int, *, at: datetime, seq: int
    ) -> tuple[Queued, list[TranslationEntry]] | None:
        """The translation back of an international round's opinion `version`, and the round's
        translations with it, or None when the round needs none (a reader of the patient's
        language); the caller writes them with the opinion instead of `completed`."""
        if not doc.international:
            return None
        if doc.translation(TranslationWay.TO_PATIENT) is not None:
            raise rules.state_conflict(
                "The opinion of an international review is translated once; a correction "
                "goes through the coordinator.",
                "translation-done",
            )
        queued = await self._queue(doc, TranslationWay.TO_PATIENT, at=at, seq=seq, version=version)
        return queued, [*doc.translations, queued.entry]

    async def _queue(
        self,
        doc: AssignmentDoc,
        way: TranslationWay,
        *,
        at: datetime,
        seq: int,
        version: int | None = None,
    ) -> Queued:
        reviewer = await self.store.reviewer(doc.reviewer_id)
        read = [lang.value for lang in reviewer.languages] if reviewer else [Language.EN.value]
        pair = rules.translation_languages(way, doc.language.value, read)
        translators = await self.store.translations.all_translators()
        chosen_id = rules.choose_translator(pair, [t.fit() for t in translators])
        chosen = next((t for t in translators if t.id == chosen_id), None)
        entry = TranslationEntry(
            id=rules.translation_id_for(doc.id, way),
            way=way,
            state=TranslationState.QUEUED,
            from_language=Language(pair[0]),
            to_language=Language(pair[1]),
            translator_id=chosen_id,
            translator_display_name=chosen.display_name if chosen else None,
            queued_at=at,
            due_at=rules.translation_due(at, self.due_days),
            version=version,
        )
        ring = await self._ring(doc.case_id)
        contact = self._contact(chosen)

        def queued(event_id: str) -> TranslationQueued:
            return TranslationQueued(
                case_id=doc.case_id,
                assignment_id=doc.id,
                reviewer_id=doc.reviewer_id,
                translation_id=entry.id,
                way=way.value,
                from_language=entry.from_language,
                to_language=entry.to_language,
                translator_id=chosen_id,
                queued_at=at,
                due_at=entry.due_at,
                recipient=contacts.for_event(ring, contact, event_id),
                seq=seq,
            )

        event = self.emitter.event("review.translation.queue", queued, trace=doc.traceparent)
        await self.store.translations.file_open(entry.id)
        log.info("translation queued", translation_id=entry.id, way=way.value)
        return Queued(entry, event)

    async def counted(self, entry: TranslationEntry) -> None:
        """Count a queued translation in its chosen translator's load, after it is written."""
        if entry.translator_id is not None:
            await self.store.translations.count(entry.translator_id, entry.id)

    async def closed(self, rounds: Iterable[AssignmentDoc]) -> None:
        """Close the translations not done of those `rounds` that ended (the specialist
        declined, or the case was withdrawn): they leave their translators' loads, then the
        translators' queue, and can no longer be taken or written. The caller is inside the
        matcher's section and holds the rounds' case.

        Exact whatever stops it: a load is the set of translations counted in it, so a release
        is the pull of one id (again: no change), and the state is written after the releases,
        so that a stop in between leaves the translation open for the next pass (a replayed
        withdrawal, or the next matching of a declined round's case: `Matcher.match`) to
        release and close. Closed already: no change."""
        for round_ in rounds:
            if not any(t.state in rules.OPEN_TRANSLATION for t in round_.translations):
                continue
            async with self.locks.hold(self.emitter.lock(round_.id)):
                doc = await self.store.assignment(round_.id)
                if doc is None or doc.status not in rules.ENDED:
                    continue
                still = [t for t in doc.translations if t.state in rules.OPEN_TRANSLATION]
                if not still:
                    continue
                await self.matcher.fence()
                for t in still:
                    if t.translator_id is not None:
                        await self.store.translations.release(t.translator_id, t.id)
                closing = [
                    t.model_copy(update={"state": TranslationState.CLOSED})
                    if t.state in rules.OPEN_TRANSLATION
                    else t
                    for t in doc.translations
                ]
                await self.store.translations.close(doc.id, translations=closing)
                log.info("translations closed", assignment_id=doc.id, count=len(still))

    async def recounted(self, doc: AssignmentDoc) -> None:
        """Count a live round's open translations in their translators' loads again (once): a
        stop between writing a round and counting its translation left it uncounted."""
        for t in doc.translations:
            if t.state in rules.OPEN_TRANSLATION:
                await self.counted(t)

    # --- the translator's work ------------------------------------------------------------------

    async def take(self, *, principal: Principal, translation_id: str) -> Translation:
        """A translator of the pair takes a queued translation (taking it again: no change)."""
        aid = rules.assignment_of_translation(translation_id)
        async with self.matcher.deciding(), self.locks.hold(self.emitter.lock(aid)):
            doc, entry = await self._open(translation_id)
            await self._check_translator(principal, entry)
            if rules.may_take_translation(entry.state, entry.translator_id, principal.sub):
                me = await self.store.translations.translator(principal.sub)
                taken = entry.model_copy(
                    update={
                        "state": TranslationState.TAKEN,
                        "translator_id": principal.sub,
                        "translator_display_name": me.display_name if me else principal.sub,
                        "taken_at": now(),
                    }
                )
                await self._write(doc, taken, seq=doc.seq, events=[])
                await self.store.translations.count(principal.sub, entry.id)
                entry = taken
        return entry.view(doc, at=now())

    async def write(
        self, *, principal: Principal, translation_id: str, body: TranslationBody
    ) -> Translation:
        """The translator who took it submits the translation; to the patient, the translated
        opinion is released with it. The same translation again writes nothing more, but
        finishes what a stop after the write left: the translation still in their load."""
        aid = rules.assignment_of_translation(translation_id)
        async with self.matcher.deciding(), self.locks.hold(self.emitter.lock(aid)):
            doc, entry = await self._open(translation_id)
            rules.check_translation_access(principal, entry.translator_id)
            if not rules.may_write_translation(entry.state, entry.translator_id, principal.sub):
                if entry.translator_id is not None:  # done: its translator's, whoever asks
                    await self.store.translations.release(entry.translator_id, entry.id)
                return entry.view(doc, at=now())
            texts = rules.translation_texts(entry.way, body)
            at = now()
            seq = rules.next_seq([doc.seq])
            ring = await self._ring(doc.case_id)
            done = entry.model_copy(
                update={
                    "state": TranslationState.DONE,
                    "done_at": at,
                    "sealed": ring.seal_json(texts, rules.translation_aad(entry.id)),
                }
            )
            events = [self._done(doc, done, at=at, seq=seq)]
            if texts.opinion is not None:
                seq += 1
                events.append(await self._completed(doc, done, texts.opinion, ring, at, seq))
            await self._write(doc, done, seq=seq, events=events)
            await self.store.translations.release(principal.sub, entry.id)
            log.info("translation done", translation_id=entry.id, way=entry.way.value)
        await self.access.record(principal, doc.case_id, "translation.write")
        return done.view(doc, translated=texts, at=at)

    def _done(self, doc: AssignmentDoc, done: TranslationEntry, *, at: datetime, seq: int) -> Event:
        assert done.translator_id is not None
        finished = TranslationDone(
            case_id=doc.case_id,
            assignment_id=doc.id,
            reviewer_id=doc.reviewer_id,
            translation_id=done.id,
            way=done.way.value,
            from_language=done.from_language,
            to_language=done.to_language,
            translator_id=done.translator_id,
            done_at=at,
            seq=seq,
        )
        return self.emitter.event("review.translation.done", finished, trace=doc.traceparent)

    async def _completed(
        self,
        doc: AssignmentDoc,
        done: TranslationEntry,
        opinion: Opinion,
        ring: Keyring,
        at: datetime,
        seq: int,
    ) -> Event:
        """The release of the translated opinion, naming its translator and source language."""
        version = done.version or 1
        reviewer = await self.store.reviewer(doc.reviewer_id)
        second = doc.second_reading.display_name if doc.second_reading else None
        content = rules.sealed_content(
            opinion,
            version,
            reviewer.display_name if reviewer else doc.reviewer_id,
            doc.specialty,
            second,
        ).model_copy(
            update={
                "translator_display_name": done.translator_display_name or done.translator_id,
                "translated_from": done.from_language,
            }
        )

        def completed(event_id: str) -> ReviewCompleted:
            return ReviewCompleted(
                case_id=doc.case_id,
                assignment_id=doc.id,
                reviewer_id=doc.reviewer_id,
                specialty=doc.specialty,
                version=version,
                completed_at=at,
                opinion=ring.seal_json(content, aad=event_id),
                seq=seq,
                report_seq=doc.report_seq(seq),
            )

        return self.emitter.event("review.opinion", completed, trace=doc.traceparent)

    # --- reads ----------------------------------------------------------------------------------

    async def translation(
        self, *, principal: Principal, translation_id: str, reason: str | None = None
    ) -> Translation:
        """One translation with its texts: its translator (or a translator of the pair, while it
        waits for anyone) the source and their translation; the specialist the translation into
        their language, once done; a coordinator both, for a stated reason (428 without). Every
        read, or its refusal, is an entry of the case's trail."""
        doc, entry = await self._found(translation_id)
        action = "translation.read"
        specialist = rules.may_read_translation(principal, entry.way, entry.state, doc.reviewer_id)
        try:
            if not specialist:
                await self._check_translator(principal, entry, reading=True)
            given = check_reason(principal, reason)
        except Problem as refused:
            if refused.status in rules.AUDITED_REFUSALS:
                await self.access.record(principal, doc.case_id, action, refused=refused.status)
            raise
        source = None if specialist else await self._source(doc, entry)
        translated = await self._translated(entry)
        ring = None if given is None else await self._ring(doc.case_id)
        await self.access.record(principal, doc.case_id, action, reason=given, ring=ring)
        return entry.view(doc, source=source, translated=translated, at=now())

    async def listed(
        self, *, principal: Principal, cursor: str | None, limit: int
    ) -> TranslationPage:
        """The open translations by id: a translator's own and those waiting for anyone of the
        pairs they translate; coordinators every one. Never their texts."""
        at = now()
        ids = sorted(
            i for i in await self.store.translations.open_ids() if cursor is None or i > cursor
        )
        me = None
        if not rules.is_coordinator(principal):
            me = await self.store.translations.translator(principal.sub)
        found: list[tuple[AssignmentDoc, TranslationEntry]] = []
        for translation_id in ids:
            if len(found) > limit:
                break
            doc = await self.store.assignment(rules.assignment_of_translation(translation_id))
            entry = (
                next((t for t in doc.translations if t.id == translation_id), None) if doc else None
            )
            if doc is None or entry is None or entry.state not in rules.OPEN_TRANSLATION:
                continue  # filed by a write that stopped before, done, or closed
            if doc.status in rules.ENDED:
                continue  # declined or withdrawn: closed with its round (`closed`)
            if rules.is_coordinator(principal) or _mine(me, entry):
                found.append((doc, entry))
        return TranslationPage.of(
            found, limit, key=lambda f: f[1].id, view=lambda f: f[1].view(f[0], at=at)
        )

    # --- helpers --------------------------------------------------------------------------------

    async def _open(self, translation_id: str) -> tuple[AssignmentDoc, TranslationEntry]:
        """A translation to take or write: 409 once its case is withdrawn."""
        doc, entry = await self._found(translation_id)
        rules.check_translation_open(doc.status, entry.state)
        return doc, entry

    async def _found(self, translation_id: str) -> tuple[AssignmentDoc, TranslationEntry]:
        doc = await self.store.assignment(rules.assignment_of_translation(translation_id))
        entry = None
        if doc is not None:
            entry = next((t for t in doc.translations if t.id == translation_id), None)
        if doc is None or entry is None:
            raise not_found("translation", "translation-not-found")
        return doc, entry

    async def _check_translator(
        self, principal: Principal, entry: TranslationEntry, *, reading: bool = False
    ) -> None:
        """403 unless a coordinator (reading only), its translator, or a translator of its pair
        while it waits for anyone."""
        if reading and rules.is_coordinator(principal):
            return
        if principal.role != "translator":
            raise Problem(403, "not-a-translator", "Forbidden", "Only a translator does this.")
        rules.check_translation_access(principal, entry.translator_id)
        me = await self.store.translations.translator(principal.sub)
        if not _mine(me, entry):
            raise Problem(
                403, "not-your-pair", "Forbidden", "You do not translate this pair of languages."
            )

    async def _write(
        self, doc: AssignmentDoc, entry: TranslationEntry, *, seq: int, events: list[Event]
    ) -> None:
        translations = [entry if t.id == entry.id else t for t in doc.translations]
        await self.matcher.fence()
        await self.emitter.write(
            lambda out: self.store.translations.write(
                doc.id, translations=translations, seq=seq, events=out
            ),
            events,
            aggregate=doc.id,
        )

    async def _source(self, doc: AssignmentDoc, entry: TranslationEntry) -> TranslationTexts:
        if entry.way is TranslationWay.TO_SPECIALIST:
            case = await self.store.case(doc.case_id)
            if case is None or case.summary is None or case.summary_event is None:
                return TranslationTexts()
            ring = await self.keys.opening(case.summary)
            summary = ring.open_model(case.summary, case.summary_event, CaseSummary)
            return TranslationTexts(summary=summary.text)
        opinion = next(o for o in doc.opinions if o.version == (entry.version or 1))
        assert opinion.sealed is not None
        aad = rules.opinion_aad(doc.id, opinion.version)
        ring = await self.keys.opening(opinion.sealed)
        return TranslationTexts(opinion=ring.open_model(opinion.sealed, aad, Opinion))

    async def _translated(self, entry: TranslationEntry) -> TranslationTexts | None:
        if entry.sealed is None:
            return None
        ring = await self.keys.opening(entry.sealed)
        return ring.open_model(entry.sealed, rules.translation_aad(entry.id), TranslationTexts)

    async def _ring(self, case_id: str) -> Keyring:
        case = await self.store.case(case_id)
        return await self.keys.ring(case.key_ref if case is not None else None)

    def _contact(self, translator: TranslatorDoc | None) -> ProfessionalContact | None:
        if translator is None or translator.contact is None:
            return None
        aad = rules.translator_contact_aad(translator.id)
        try:
            return self.keys.keyring.open_model(translator.contact, aad, ProfessionalContact)
        except SealingError:
            log.warning("translator address cannot be opened", translator_id=translator.id)
            return None


def _mine(me: TranslatorDoc | None, entry: TranslationEntry) -> bool:
    """Whether translator `me` sees `entry`: theirs, or waiting for anyone of a pair they do."""
    if me is None or entry.translator_id not in (None, me.id):
        return False
    pair = {entry.from_language, entry.to_language}
    return pair <= set(me.languages)


def specialist_waits(doc: AssignmentDoc) -> TranslationState | None:
    """Where the round's translation to the specialist is (None: it needs none)."""
    first = doc.translation(TranslationWay.TO_SPECIALIST)
    return first.state if first is not None else None


async def overdue_translations(store: Store, *, at: datetime) -> int:
    """How many open translations are past their own due date at `at`: the keyed index of the
    open ones, their rounds read by `_id` in one request (never a scan of the assignments); one
    filed by a write that stopped before, done, or closed with its ended round is not counted."""
    ids = set(await store.translations.open_ids())
    rounds = sorted({rules.assignment_of_translation(i) for i in ids})
    return sum(
        rules.translation_overdue(t.state, t.due_at, at)
        for doc in await store.listed(rounds)
        if doc is not None and doc.status not in rules.ENDED
        for t in doc.translations
        if t.id in ids
    )
