"""The shape plan: every input shape the grounding step can ever run at, known when a model loads.

The step runs in three stages (`engine.stages`), each compiled (or captured as a CUDA graph) per
static shape, so the number of compiled models is a sum over the stages, not a product:

* video stage, one video at a time: (1, clips) for each clip bucket;
* query stage, one query at a time: (1, words, chars) for each word and char bucket;
* cross stage, (batch, clips, words) for each batch size, clip and word bucket; a batch of any
  size runs as a few chunks of the planned sizes (`chunks`).

The buckets are `engine.buckets`'s; char buckets stop at the widest word a request may have
(`Limits.max_word_chars`), batch sizes are the powers of 4 below `max_batch`, and `max_batch`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from reference.config import SeqPANConfig

from .buckets import char_bucket, clip_bucket, word_bucket

BATCH_GROWTH = 4  # planned batch sizes grow by this factor
CALL_COST_ROWS = 0.5  # what one cross-stage call costs beyond its rows, in rows (measured on CPU: ~0.6 ms vs ~1.3 ms a row)


@dataclass(frozen=True)
class ShapePlan:
    """The buckets of one model and batch limit, and the shapes of each stage."""
    clips: tuple[int, ...]
    words: tuple[int, ...]
    chars: tuple[int, ...]
    batches: tuple[int, ...]

    @classmethod
    def of(cls, cfg: SeqPANConfig, max_batch: int, max_word_chars: int) -> ShapePlan:
        """The plan for a model of config `cfg` serving batches of up to `max_batch` queries whose
        words have at most `max_word_chars` characters."""
        n = cfg.max_pos_len
        batches, size = [], 1
        while size < max_batch:
            batches.append(size)
            size *= BATCH_GROWTH
        return cls(clips=tuple(sorted({clip_bucket(c, n) for c in range(1, n + 1)})),
                   words=tuple(sorted({word_bucket(w, n) for w in range(1, n + 1)})),
                   chars=tuple(sorted({char_bucket(w) for w in range(1, max(max_word_chars, 1) + 1)})),
                   batches=(*batches, max_batch))

    def video_shapes(self) -> list[tuple[int, int]]:
        """(videos, clips) of every video-stage model."""
        return [(1, n) for n in self.clips]

    def query_shapes(self) -> list[tuple[int, int, int]]:
        """(queries, words, chars) of every query-stage model."""
        return [(1, m, w) for m in self.words for w in self.chars]

    def cross_shapes(self) -> list[tuple[int, int, int]]:
        """(queries, clips, words) of every cross-stage model."""
        return [(b, n, m) for b in self.batches for n in self.clips for m in self.words]

    def shapes(self, stage: str) -> list[tuple[int, ...]]:
        """The shapes of stage `stage` (video, query or cross)."""
        return {"video": self.video_shapes, "query": self.query_shapes, "cross": self.cross_shapes}[stage]()

    def __len__(self) -> int:
        return len(self.video_shapes()) + len(self.query_shapes()) + len(self.cross_shapes())

    def chunks(self, count: int) -> list[int]:
        """Planned batch sizes whose sum covers `count` queries (the last chunk padded), at the least
        estimated cost: each call costs its rows plus CALL_COST_ROWS; largest first."""
        if not 1 <= count <= self.batches[-1]:
            raise ValueError(f"a batch of {count} queries is outside the plan's 1..{self.batches[-1]}")
        return list(self._best_chunks[count])

    @cached_property
    def _best_chunks(self) -> list[tuple[int, ...]]:
        best: list[tuple[float, tuple[int, ...]]] = [(0.0, ())]
        for count in range(1, self.batches[-1] + 1):
            options = []
            for size in self.batches:
                cost, sizes = best[max(count - size, 0)]
                options.append((cost + size + CALL_COST_ROWS, len(sizes) + 1, tuple(sorted((*sizes, size), reverse=True))))
            cost, _, sizes = min(options)
            best.append((cost, sizes))
        return [sizes for _, sizes in best]
