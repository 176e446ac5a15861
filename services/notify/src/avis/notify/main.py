"""The notify service: settings -> observability -> broker, database -> routes."""

from fastapi import FastAPI

from avis.notify import api, handlers
from avis.notify.settings import Settings
from avis.shared.runtime import Runtime, serve

SENDS: tuple[str, ...] = ()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the notify app over its own store and broker connections."""
    settings = settings or Settings()
    runtime = Runtime(settings, sends=SENDS)
    handlers.register(runtime)
    return runtime.create_app("Avis notify", [api.router])


def run() -> None:
    """Serve the notify service (`avis-notify`)."""
    serve(create_app, Settings())


if __name__ == "__main__":
    run()
