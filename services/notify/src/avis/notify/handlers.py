"""Kafka subscribers of the notify service (thin, like api.py)."""

from avis.shared.runtime import Runtime


def register(runtime: Runtime) -> None:
    """Subscribe the notify service's handlers."""
