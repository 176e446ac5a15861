"""Kafka subscribers of the reports service (thin, like api.py)."""

from avis.shared.runtime import Runtime


def register(runtime: Runtime) -> None:
    """Subscribe the reports service's handlers."""
