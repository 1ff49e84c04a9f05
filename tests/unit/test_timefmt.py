from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from gateway.processors.timefmt import iso_utc, iso_utc_each


def test_document_timestamps() -> None:
    stamps = np.array([0, 1_700_000_000_123_456_789, -1_500_000_000], np.int64)
    assert iso_utc_each(stamps) == [
        "1970-01-01T00:00:00.000Z",
        "2023-11-14T22:13:20.123Z",
        "1969-12-31T23:59:58.500Z",
    ]
    assert iso_utc(1_700_000_000_123_000_000) == "2023-11-14T22:13:20.123Z"


@given(st.lists(st.integers(-(2**61), 2**62), max_size=50))
def test_each_is_numpys_millisecond_iso_format(stamps: list[int]) -> None:
    array = np.array(stamps, np.int64)
    expected = np.datetime_as_string(array.view("datetime64[ns]"), unit="ms")
    assert iso_utc_each(array) == [f"{text}Z" for text in expected.tolist()]
