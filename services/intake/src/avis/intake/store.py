"""The intake service's MongoDB collections and indexes.

- `cases`: one document per case (the aggregate): identity, clinical summary, consent,
  status, timeline, the current reviewer, and its outbox. `_id` is the case id.
- `documents`: record metadata; `_id` is `<case_id>:<sha256>`, so the same file twice on a
  case is one document. The bytes live in the GridFS bucket `records` under the same id.
- `refblocks`: claimed blocks of human references, `_id` `refblock:<year>:<block>`.
- `idempotency`: `_id` `<caller>:<Idempotency-Key>` -> the case that key created.
- `inbox_<day>`: the idempotent consumer's markers, one collection per day (shared plumbing).
"""

from dataclasses import dataclass

from gridfs import AsyncGridFSBucket
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from avis.shared.mongo import Document

RECORDS_BUCKET = "records"


@dataclass(frozen=True)
class Store:
    """Intake's collections."""

    db: AsyncDatabase[Document]

    @property
    def cases(self) -> AsyncCollection[Document]:
        """Case aggregates (with their outbox)."""
        return self.db["cases"]

    @property
    def documents(self) -> AsyncCollection[Document]:
        """Record metadata, `_id` `<case_id>:<sha256>`."""
        return self.db["documents"]

    @property
    def refblocks(self) -> AsyncCollection[Document]:
        """Claimed reference blocks."""
        return self.db["refblocks"]

    @property
    def idempotency(self) -> AsyncCollection[Document]:
        """Idempotency keys of case creation."""
        return self.db["idempotency"]

    def records(self) -> AsyncGridFSBucket:
        """The bucket holding the records' bytes."""
        return AsyncGridFSBucket(self.db, bucket_name=RECORDS_BUCKET)


async def init(db: AsyncDatabase[Document]) -> None:
    """Create the indexes the intake service relies on (one call each: the store wants that)."""
    store = Store(db)
    await store.cases.create_index("reference", unique=True)
    await store.cases.create_index([("patient_id", ASCENDING), ("_id", DESCENDING)])
    await store.cases.create_index([("partner_id", ASCENDING), ("_id", DESCENDING)])
    await store.cases.create_index([("reviewer_id", ASCENDING), ("_id", DESCENDING)])
    await store.cases.create_index([("status", ASCENDING), ("_id", DESCENDING)])
    await store.documents.create_index([("case_id", ASCENDING), ("uploaded_at", ASCENDING)])
