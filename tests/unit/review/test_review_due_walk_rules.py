"""The due walk's pure rules: which day and month file a sort key, how many day buckets a page
reads at once, and when it must list another month's days first."""

from datetime import UTC, datetime

from avis.review.rules import due_day, due_days_enough, due_days_to_read, due_month, sort_key

DAYS = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]


def test_a_sort_key_is_filed_under_its_day_and_month() -> None:
    key = sort_key(datetime(2026, 3, 31, 23, 59, tzinfo=UTC), "a-0001")
    assert due_day(key) == "2026-03-31"
    assert due_month(due_day(key)) == "2026-03"


def test_the_walk_reads_as_many_days_as_their_counts_need() -> None:
    counts = dict(zip(DAYS, [3, 5, 40, 2], strict=True))
    assert due_days_to_read(DAYS, counts, wanted=3, most=8) == 1, "the first day fills it"
    assert due_days_to_read(DAYS, counts, wanted=4, most=8) == 2, "a short first day: and the next"
    assert due_days_to_read(DAYS, counts, wanted=21, most=8) == 3
    assert due_days_to_read(DAYS, counts, wanted=100, most=8) == 4, "every day listed"
    assert due_days_to_read(DAYS, counts, wanted=100, most=2) == 2, "at most `most`"


def test_an_emptied_day_is_read_with_the_next_and_an_unknown_one_alone() -> None:
    counts = {"2026-03-01": 0, "2026-03-02": -1, "2026-03-03": 4}
    assert due_days_to_read(DAYS, counts, wanted=4, most=8) == 3
    assert due_days_to_read(DAYS, {"2026-03-01": 2}, wanted=4, most=8) == 2, "day 2 unknown"
    assert due_days_to_read(DAYS, {}, wanted=1, most=8) == 1


def test_the_walk_lists_another_month_only_when_the_days_listed_fall_short() -> None:
    counts = dict(zip(DAYS, [3, 5, 40, 2], strict=True))
    assert due_days_enough(DAYS[:2], counts, wanted=8, most=8)
    assert not due_days_enough(DAYS[:2], counts, wanted=9, most=8)
    assert due_days_enough(DAYS[:2], counts, wanted=9, most=2), "a full read's worth of days"
    assert due_days_enough(DAYS[:1], {}, wanted=50, most=8), "an unknown day fills a page"
    assert not due_days_enough([], counts, wanted=1, most=8)
