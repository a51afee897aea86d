"""Which bytes a `Range` header asks for (RFC 9110 §14.1.2), against the RFC's own examples."""
import pytest

from engine.serve.ranges import RangeNotSatisfiable, byte_range


@pytest.mark.parametrize("header, expected", [
    ("bytes=0-499", (0, 499)), ("bytes=500-999", (500, 999)),  # the RFC's examples on a 10000-byte file
    ("bytes=-500", (9500, 9999)), ("bytes=9500-", (9500, 9999)), ("bytes=0-0", (0, 0)), ("bytes=-1", (9999, 9999)),
    ("bytes=9000-20000", (9000, 9999)), ("bytes=-20000", (0, 9999)), (" bytes=1-2 ", (1, 2)),
    (None, None), ("", None), ("bytes=", None), ("bytes=-", None), ("bytes=a-b", None), ("items=0-1", None),
    ("bytes=0-1,5-6", None), ("bytes=5-3", None), ("bytes=1-2-3", None),
])
def test_one_range_or_the_whole_file(header, expected):
    assert byte_range(header, 10_000) == expected


@pytest.mark.parametrize("header, size", [("bytes=10000-", 10_000), ("bytes=20000-30000", 10_000),
                                          ("bytes=-0", 10_000), ("bytes=0-", 0), ("bytes=-5", 0)])
def test_a_range_past_the_end_is_not_satisfiable(header, size):
    with pytest.raises(RangeNotSatisfiable):
        byte_range(header, size)
