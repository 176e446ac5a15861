"""The intake service's MongoDB collections and indexes."""

from pymongo.asynchronous.database import AsyncDatabase

from avis.shared.mongo import Document


async def init(db: AsyncDatabase[Document]) -> None:
    """Create the indexes the intake service relies on."""
    await db["inbox"].create_index("at")
