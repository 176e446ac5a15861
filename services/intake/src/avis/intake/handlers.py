"""Kafka subscribers of the intake service (thin, like api.py)."""

from avis.shared.runtime import Runtime


def register(runtime: Runtime) -> None:
    """Subscribe the intake service's handlers."""
