"""What a service keeps for a set time, and the sweep that purges it once that time is past.

A document kept for a set time is put on the calendar when it is written: an entry in the
collection of the day after which it goes (`expires_YYYYMMDD`, `_id` = `<collection>/<doc id>`).
A sweep lists the collections' names and, for each day that is over, reads that day's entries,
deletes each document by its `_id` and drops the day. Its store requests are the number of
documents it removes plus a constant (one listing, one read and one drop per day), never a read
of what stays: the local store serves nothing but `_id` equality from an index, so a filter on
a date would read every document kept. A sweep that stops half-way leaves its day to the next
one, which deletes again what is gone already (nothing) and the rest.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

import structlog
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from avis.shared.mongo import Document

PREFIX = "expires_"
log = structlog.get_logger()


def day_of(at: datetime) -> str:
    """The calendar collection of the day `at` falls on (UTC)."""
    return f"{PREFIX}{at:%Y%m%d}"


def entry(collection: str, doc_id: str) -> Document:
    """A day's entry: which document goes."""
    return {"_id": f"{collection}/{doc_id}", "collection": collection, "doc_id": doc_id}


class Calendar:
    """The days on which a service's documents kept for a set time are to be purged."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db

    async def keep_until(self, collection: str, doc_id: str, until: datetime) -> None:
        """Purge `collection`'s document `doc_id` once the day of `until` is over (putting it
        on the calendar again changes nothing)."""
        with contextlib.suppress(DuplicateKeyError):
            await self.db[day_of(until)].insert_one(entry(collection, doc_id))

    async def release(self, collection: str, doc_id: str, until: datetime) -> None:
        """Take `collection`'s document `doc_id` off the day of `until` (one delete by `_id`),
        before putting it on a later day: a document is purged on the first day it is on."""
        await self.db[day_of(until)].delete_one({"_id": f"{collection}/{doc_id}"})

    async def sweep(self, at: datetime) -> int:
        """Purge what was kept until a day before `at`'s; the number of documents removed."""
        today = day_of(at)
        removed = 0
        for name in sorted(await self.db.list_collection_names()):
            if not name.startswith(PREFIX) or name >= today:
                continue
            async for entry in self.db[name].find():
                await self.db[entry["collection"]].delete_one({"_id": entry["doc_id"]})
                removed += 1
            await self.db.drop_collection(name)
        if removed:
            log.info("kept data purged", documents=removed)
        return removed
