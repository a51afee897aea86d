"""engine.lru.LRU: the bound, the order of eviction, a get marking an entry used, counters."""
from __future__ import annotations

import pytest

from engine.lru import LRU


def test_least_recently_used_entries_go_first_and_get_marks_use():
    lru: LRU[str, int] = LRU(2)
    assert lru.put("a", 1) == 1 and lru.put("b", 2) == 2
    assert lru.get("a") == 1  # a used after b
    lru.put("c", 3)  # b is the least recently used
    assert (lru.get("b"), lru.get("a"), lru.get("c"), len(lru)) == (None, 1, 3, 2)
    assert (lru.hits, lru.misses) == (3, 1)
    lru.put("a", 10)  # replacing keeps one entry
    assert lru.get("a") == 10 and len(lru) == 2


def test_capacity_zero_keeps_nothing_and_bad_capacities_are_refused():
    lru: LRU[str, int] = LRU(0)
    assert lru.put("a", 1) == 1 and lru.get("a") is None and len(lru) == 0
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="non-negative integer"):
            LRU(bad)


def test_a_byte_bound_drops_least_recently_used_values_until_the_rest_fit():
    lru: LRU[str, bytes] = LRU(10, max_bytes=10, size=len)
    lru.put("a", b"1234")
    lru.put("b", b"1234")
    assert lru.get("a") == b"1234" and lru.bytes == 8  # a used after b
    lru.put("c", b"12345")  # 13 bytes: b goes first, then a fits with c (9)
    assert (lru.get("b"), lru.get("a"), lru.bytes, len(lru)) == (None, b"1234", 9, 2)
    lru.put("a", b"1")  # replacing counts the new value only
    assert lru.bytes == 6
    lru.put("huge", b"x" * 11)  # larger than the bound alone: not kept, and nothing else dropped for it
    assert (lru.get("huge"), lru.bytes, len(lru)) == (None, 6, 2)
    for bad in ({"max_bytes": -1, "size": len}, {"max_bytes": 1.5, "size": len}, {"max_bytes": 4}, {"size": len}):
        with pytest.raises(ValueError):
            LRU(3, **bad)
