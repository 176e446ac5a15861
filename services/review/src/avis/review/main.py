"""The review service: settings -> observability -> broker, database -> routes."""

from functools import partial

from fastapi import FastAPI

from avis.review import api, handlers, store
from avis.review.service import ReviewService
from avis.review.settings import Settings
from avis.shared import topics
from avis.shared.runtime import Runtime, serve

SENDS: tuple[str, ...] = (topics.REVIEW_ASSIGNED, topics.REVIEW_COMPLETED)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the review app over its own store and broker connections."""
    settings = settings or Settings()
    runtime = Runtime(settings, sends=SENDS)
    review = ReviewService(runtime, settings)
    seed = settings.seed_file if settings.seed_reviewers else None
    runtime.on_store(partial(store.init, seed_file=seed))
    runtime.on_store(lambda _: review.recover())
    runtime.background("overdue", partial(review.watch_overdue, settings.overdue_refresh_seconds))
    handlers.register(runtime, review)
    app = runtime.create_app(
        "Avis review",
        [api.router],
        description="Reviewer directory, matching, assignments and the structured opinion.",
    )
    app.state.review = review
    return app


def run() -> None:
    """Serve the review service (`avis-review`)."""
    serve(create_app, Settings())


if __name__ == "__main__":
    run()
