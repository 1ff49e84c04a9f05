from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from gateway.processors.timefmt import iso_utc, iso_utc_each

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# int64 nanoseconds, the years 1677 to 2262 (the lowest value is numpy's "not a time")
_STAMPS = st.integers(-(2**63) + 1, 2**63 - 1)


def test_document_timestamps() -> None:
    stamps = np.array([0, 1_700_000_000_123_456_789, -1_500_000_000], np.int64)
    assert iso_utc_each(stamps) == [
        "1970-01-01T00:00:00.000Z",
        "2023-11-14T22:13:20.123Z",
        "1969-12-31T23:59:58.500Z",
    ]
    assert iso_utc(1_700_000_000_123_999_999) == "2023-11-14T22:13:20.123Z"  # truncated


@given(_STAMPS)
def test_text_is_the_moment_truncated_to_the_millisecond(stamp: int) -> None:
    text = iso_utc(stamp)
    assert text.endswith("Z") and len(text) == 24
    back = datetime.fromisoformat(text)
    millis = (back - _EPOCH) // timedelta(milliseconds=1)
    assert millis == stamp // 1_000_000


@given(st.lists(_STAMPS, max_size=50))
def test_each_formats_as_one_at_a_time(stamps: list[int]) -> None:
    assert iso_utc_each(np.array(stamps, np.int64)) == [iso_utc(s) for s in stamps]
