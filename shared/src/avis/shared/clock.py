"""One clock for every service: UTC, truncated to the millisecond the store keeps, so a time
read back (or carried in an event) equals the time that was written."""

from datetime import UTC, datetime


def now() -> datetime:
    """The current UTC time at the store's precision (milliseconds)."""
    at = datetime.now(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def to_millis(at: datetime) -> datetime:
    """`at` truncated to the store's precision."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)
