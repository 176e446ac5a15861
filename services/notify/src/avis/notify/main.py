"""The notify service: settings -> observability -> broker, database -> routes."""

import uvicorn
from fastapi import FastAPI

from avis.notify import api, handlers, store
from avis.notify.settings import Settings
from avis.shared.runtime import Runtime

SENDS: tuple[str, ...] = ()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the notify app over its own store and broker connections."""
    settings = settings or Settings()
    runtime = Runtime(settings, sends=SENDS)
    runtime.on_store(store.init)
    handlers.register(runtime)
    return runtime.create_app("Avis notify", [api.router])


def run() -> None:
    """Serve the notify service (`avis-notify`)."""
    settings = Settings()
    uvicorn.run(
        create_app(settings), host=settings.http_host, port=settings.http_port, log_level="warning"
    )


if __name__ == "__main__":
    run()
