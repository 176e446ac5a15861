"""One page type and one cursor policy for every list of the platform (DESIGN.md section 5).

A list is ordered by one sortable string key per item (an id, or a composite key stored with
the item). The store reads `limit + 1` items after the cursor; the page keeps `limit` of them
and, if the extra one exists, `next_cursor` is the key of the page's last item. A cursor is
just a position in the order, so any string is accepted; clients pass `next_cursor` back as is.

    class CasePage(Page[CaseSummary]): ...                    # the API model, named per list
    docs = await store.cases_page(..., after=cursor, limit=limit + 1)
    return CasePage.of(docs, limit, key=lambda d: d.id, view=case_summary)
"""

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, Self, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field

T = TypeVar("T")
S = TypeVar("S")


def next_cursor(items: Sequence[S], limit: int, key: Callable[[S], str]) -> str | None:
    """The cursor after a page of `limit` read from `items` (up to `limit + 1` were read)."""
    return key(items[limit - 1]) if len(items) > limit else None


class Page(BaseModel, Generic[T]):
    """One page of a list; pass `next_cursor` as `cursor` for the next one (null: the last)."""

    items: list[T]
    next_cursor: str | None = Field(description="`cursor` of the next page; null on the last.")

    @classmethod
    def of(
        cls, found: Sequence[S], limit: int, *, key: Callable[[S], str], view: Callable[[S], T]
    ) -> Self:
        """The page of `found` (read with `limit + 1`), each item shown through `view`."""
        return cls(
            items=[view(item) for item in found[:limit]],
            next_cursor=next_cursor(found, limit, key),
        )


# The query parameters of every list. A list whose cursors have a known shape passes its pattern.
Limit = Annotated[int, Query(ge=1, le=100, description="Items per page.")]


def cursor_param(pattern: str | None = None, description: str | None = None) -> Any:
    """The `cursor` query parameter (`Annotated[str | None, cursor_param(...)]`): any position
    of at most 512 characters, or the list's own shape when it has one."""
    text = description or "`next_cursor` of the previous page, as is."
    if pattern is not None:
        return Query(pattern=pattern, description=text)
    return Query(min_length=1, max_length=512, description=text)


Cursor = Annotated[str | None, cursor_param()]
