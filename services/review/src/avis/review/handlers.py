"""Kafka subscribers of the review service (thin, like api.py)."""

from avis.shared.runtime import Runtime


def register(runtime: Runtime) -> None:
    """Subscribe the review service's handlers."""
