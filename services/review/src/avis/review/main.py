"""The review service's composition root: settings -> runtime (observability, broker, store) ->
store, emitter and relay -> matcher -> services -> handlers, routes and background jobs."""

from functools import partial

from fastapi import FastAPI

from avis.review import api, contacts, handlers, store
from avis.review.followups import FollowUps
from avis.review.keying import CaseKeying
from avis.review.matching import Matcher
from avis.review.rules import Sla
from avis.review.service import SOURCE, DirectoryService, ReviewService
from avis.review.settings import Settings
from avis.shared.case_keys import CaseKeys
from avis.shared.emit import Emitter
from avis.shared.events import (
    FollowUpAnswered,
    FollowUpAsked,
    InformationRequested,
    ReviewAccepted,
    ReviewAssigned,
    ReviewCompleted,
    ReviewDeclined,
    ReviewResumed,
    SecondReadingAgreed,
    SecondReadingCommented,
    SecondReadingRequested,
    TranslationDone,
    TranslationQueued,
)
from avis.shared.runtime import Runtime, serve

# What this service publishes: its AsyncAPI document's `send` operations.
SENDS = (
    ReviewAccepted,
    ReviewAssigned,
    ReviewCompleted,
    ReviewDeclined,
    InformationRequested,
    ReviewResumed,
    FollowUpAsked,
    FollowUpAnswered,
    SecondReadingRequested,
    SecondReadingCommented,
    SecondReadingAgreed,
    TranslationQueued,
    TranslationDone,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the review app over its own store and broker connections."""
    settings = settings or Settings()
    runtime = Runtime(settings, sends=SENDS)
    reviews = store.Store(runtime.db)
    seed = settings.seed_file if settings.seed_reviewers else None
    keys = CaseKeys.from_settings(settings)
    runtime.on_stop(keys.close)
    seal = partial(contacts.sealed_contact, keys.keyring)  # the seed's addresses, sealed
    seal_translator = partial(contacts.sealed_translator_contact, keys.keyring)
    runtime.on_store(
        partial(store.init, seed_file=seed, seal=seal, seal_translator=seal_translator)
    )
    runtime.on_store(partial(contacts.reseal_directory, reviews, keys.keyring))
    runtime.on_store(partial(store.fold_due_days, reviews))
    emitter = Emitter(SOURCE, runtime.relay, reviews.assignments)
    matcher = Matcher(
        store=reviews,
        locks=runtime.locks,
        emitter=emitter,
        sla=Sla(settings.sla_routine_days, settings.sla_urgent_days),
        # One matching decision at a time across every copy (see matching.py's docstring).
        lease=runtime.lease("matcher"),
    )
    review = ReviewService(
        store=reviews,
        locks=runtime.locks,
        emitter=emitter,
        keys=keys,
        matcher=matcher,
        intake_base_url=settings.intake_base_url,
        service_name=settings.service_name,
        information_expiry_days=settings.information_expiry_days,
        translation_due_days=settings.translation_due_days,
    )
    directory = DirectoryService(
        store=reviews, locks=runtime.locks, matcher=matcher, keyring=review.keyring
    )
    runtime.on_store(lambda _: matcher.recover())
    # On one copy at a time: it reads the whole directory and releases ended assignments
    # from reviewers' loads (a write on reviewer documents), so N copies do it once per period.
    runtime.singleton(
        "overdue", lambda _: review.sla.watch(interval=settings.overdue_refresh_seconds)
    )
    keying = CaseKeying(store=reviews, locks=runtime.locks, emitter=emitter, keys=review.keys)
    handlers.register(runtime, review, keying)
    follow_ups = FollowUps(
        review,
        period_days=settings.follow_up_period_days,
        due_days=settings.follow_up_due_days,
    )
    handlers.register_follow_ups(runtime, follow_ups)
    runtime.anchor(reviews.trail)
    app = runtime.create_app(
        "Avis review",
        [api.router],
        description="Reviewer directory, matching, assignments and the structured opinion.",
    )
    app.state.review = review
    app.state.directory = directory
    app.state.follow_ups = follow_ups
    return app


def run() -> None:
    """Serve the review service (`avis-review`)."""
    serve(create_app, Settings())


if __name__ == "__main__":
    run()
