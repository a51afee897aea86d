"""Bucketing: group requests of similar shape, and the padded shapes that batches run at."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Hashable, Iterable, Sequence

from reference.embedding import MIN_CHAR_WIDTH

MIN_CLIPS = 16  # clip counts round up to a power of two, at least this (capped at max_pos_len)
MIN_WORDS = 16  # query lengths round up to a power of two, at least this
MIN_CHARS = 8  # char widths round up to a power of two, at least this
MERGE_WORDS = 2  # word buckets up to this factor apart (and their chars) run as one batch
# Coarse length buckets for compiled localizers (a TensorRT profile or a CUDA graph each): clips
# per video of Charades-STA, ActivityNet Captions and TACoS.
LENGTH_BUCKETS = (64, 100, 256)


def round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def power_of_two_bucket(value: int, smallest: int) -> int:
    """The next power of two of `value`, at least `smallest` (itself a power of two)."""
    size = smallest
    while size < value:
        size *= 2
    return size


def clip_bucket(num_clips: int, max_pos_len: int) -> int:
    """Padded clip count for a video of `num_clips` clips: the next power of two, at least MIN_CLIPS,
    capped at max_pos_len (most videos of a dataset reach its max_pos_len after down-sampling)."""
    return min(power_of_two_bucket(num_clips, MIN_CLIPS), max_pos_len)


def word_bucket(num_words: int, max_pos_len: int) -> int:
    """Padded query length: the next power of two, at least MIN_WORDS, capped at max_pos_len (the
    position embedding's length; queries are cut to it)."""
    return min(power_of_two_bucket(num_words, MIN_WORDS), max_pos_len)


def char_bucket(width: int) -> int:
    """Padded char width: the next power of two, at least MIN_CHARS (the char CNN needs 4)."""
    return power_of_two_bucket(max(width, MIN_CHAR_WIDTH), MIN_CHARS)


def length_buckets(max_pos_len: int, buckets: tuple[int, ...] = LENGTH_BUCKETS) -> tuple[int, ...]:
    """The coarse bucket lengths a model can use: those below its max_pos_len, then max_pos_len."""
    return tuple(sorted({b for b in buckets if b < max_pos_len} | {max_pos_len}))


def batch_bucket(size: int) -> int:
    """Padded batch size for a captured CUDA graph: the next power of two."""
    return 1 << max(size - 1, 0).bit_length()


@dataclass(frozen=True)
class Shape:
    """The padded shape one batch runs at."""
    clips: int
    words: int
    chars: int


def merged_shapes(shapes: Iterable[Shape]) -> dict[Shape, Shape]:
    """Each shape -> the shape its batch runs at. Shapes with the same clip count share a batch when
    their word buckets are within a factor MERGE_WORDS of the smallest among them, at the largest
    words and chars of that set: one call instead of several, each video encoded once, for the cost
    of padding a few short queries (padding never changes an answer, only its rounding)."""
    by_clips: dict[int, list[Shape]] = defaultdict(list)
    for shape in set(shapes):
        by_clips[shape.clips].append(shape)
    merged = {}
    for clips, members in by_clips.items():
        members.sort(key=lambda s: (s.words, s.chars))
        while members:
            smallest = members[0].words
            group = [s for s in members if s.words <= MERGE_WORDS * smallest]
            target = Shape(clips, max(s.words for s in group), max(s.chars for s in group))
            merged.update((s, target) for s in group)
            members = members[len(group):]
    return merged


def plan_batches(keys: Sequence[tuple[Shape, Hashable]], max_batch: int) -> list[tuple[Shape, list[int]]]:
    """Group item indices by the shape they run at (`merged_shapes`), in order of first appearance,
    at most `max_batch` each.

    `keys[i]` is item i's (shape, video key); items of one video are kept together in a chunk
    where they fit, so that its video encoding is shared.
    """
    runs_at = merged_shapes(shape for shape, _ in keys)
    groups: dict[Shape, dict[Hashable, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, (shape, video) in enumerate(keys):
        groups[runs_at[shape]][video].append(i)
    plan: list[tuple[Shape, list[int]]] = []
    for shape, by_video in groups.items():
        ordered = [i for members in by_video.values() for i in members]
        plan += [(shape, ordered[k: k + max_batch]) for k in range(0, len(ordered), max_batch)]
    return plan
