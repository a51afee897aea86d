"""Which frames go into each I3D window: the original's rule, as a list and as frames stream in.

The original (VSLNet `prepare/`) windows a clip of t frames as
    for start in range(0, t, s): end = min(t - 1, start + s); if end - start < s: start = max(0, end - s)
so every full window [k*s, k*s + s) that ends before the last frame, then one tail window
[max(0, t-1-s), t-1) — the last frame is never used, and the tail may repeat the window before it.
ActivityNet/TACoS videos of at least `chunk` frames were cut into chunks of `chunk` frames (a
last chunk shorter than s taken as the last s frames instead), each windowed on its own.
"""
from __future__ import annotations

Window = tuple[int, int]  # [start, end) frame indices


def clip_windows(t: int, s: int) -> list[Window]:
    """Windows of a clip of t ≥ 1 frames with window length s."""
    full = [(k * s, k * s + s) for k in range((t - 1) // s)]
    return full + [(max(0, t - 1 - s), t - 1)]


def plan_windows(t: int, s: int, chunk: int | None = None) -> list[Window]:
    """Windows of a video of t ≥ 1 frames, in the original's order."""
    if chunk is None or t < chunk:
        return clip_windows(t, s)
    windows: list[Window] = []
    for start in range(0, t - 1, chunk):
        end = min(start + chunk, t)
        if end - start < s:
            start = end - s
        windows += [(start + a, start + b) for a, b in clip_windows(end - start, s)]
    return windows


class WindowStream:
    """Emits `plan_windows(t, s, chunk)` while frames arrive, before t is known: call `push()`
    after each frame and `finish()` after the last; `keep_from` is the first frame still needed."""

    def __init__(self, s: int, chunk: int | None = None):
        self.s, self.chunk = s, chunk
        self.count = 0          # frames seen
        self.chunk_start = 0    # first frame of the current chunk
        self.next_full = 0      # local start of the next full window of the current chunk

    @property
    def keep_from(self) -> int:
        return max(0, min(self.chunk_start + self.next_full, self.count - self.s - 1))

    def push(self) -> list[Window]:
        self.count += 1
        local = self.count - self.chunk_start  # at most chunk: a full chunk starts the next one below
        out: list[Window] = []
        while self.next_full + self.s <= local - 1:
            start = self.chunk_start + self.next_full
            out.append((start, start + self.s))
            self.next_full += self.s
        if self.chunk is not None and local == self.chunk:  # a full chunk: its tail is certain
            out.append(self._tail(self.chunk))
            self.chunk_start += self.chunk
            self.next_full = 0
        return out

    def finish(self) -> list[Window]:
        t, start = self.count, self.chunk_start
        if start == 0:
            return [self._tail(t)] if t > 0 else []
        if start > t - 2:  # the original's chunk loop never reached this chunk
            return []
        if t - start < self.s:  # a short last chunk is the last s frames, windowed on its own: one window
            return [(t - self.s, t - 1)]
        return [self._tail(t - start)]

    def _tail(self, length: int) -> Window:
        start, end = clip_windows(length, self.s)[-1]
        return self.chunk_start + start, self.chunk_start + end
