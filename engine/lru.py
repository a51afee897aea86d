"""A bounded least-recently-used map, safe to share between threads."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most `capacity` entries (0 keeps none) and, when `max_bytes` is given, at most that many
    bytes of values as `size` counts them; `get` marks an entry used, `put` drops the least recently
    used entries past either bound (a value larger than `max_bytes` alone is not kept)."""

    def __init__(self, capacity: int, max_bytes: int | None = None, size: Callable[[V], int] | None = None):
        for name, bound in (("capacity", capacity), ("byte bound", 0 if max_bytes is None else max_bytes)):
            if isinstance(bound, bool) or not isinstance(bound, int) or bound < 0:
                raise ValueError(f"an LRU {name} must be a non-negative integer, got {bound!r}")
        if (max_bytes is None) != (size is None):
            raise ValueError("an LRU bounded in bytes needs both max_bytes and size")
        self.capacity, self.max_bytes, self._size = capacity, max_bytes, size
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        self.bytes = 0  # of the values kept, when bounded in bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> V:
        """Keep `value` under `key` (unless it cannot fit); returns `value`."""
        size = self._size(value) if self._size is not None else 0
        with self._lock:
            self._drop(key)
            if self.max_bytes is not None and size > self.max_bytes:
                return value  # it would push out everything and still not fit
            self._entries[key] = value
            self.bytes += size
            while len(self._entries) > self.capacity or (self.max_bytes is not None and self.bytes > self.max_bytes):
                self._drop(next(iter(self._entries)))
        return value

    def _drop(self, key: K) -> None:
        value = self._entries.pop(key, None)
        if value is not None and self._size is not None:
            self.bytes -= self._size(value)
