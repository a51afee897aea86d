"""Training targets exactly as the original SeqPAN data loader builds them.

For a sample with L valid clips and gold clip indices (st, et): soft start/end distributions
that put 0.5 on the gold clip and split the rest between its neighbours (folded back onto
the gold clip at either end of the video), every other valid clip holding 1e-10; and the
per-clip matching labels O=0, B-M=1, I-M=2, E-M=3, where B-M and E-M cover the gold clip and
one clip either side.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OUTSIDE, BEGIN, INSIDE, END = 0, 1, 2, 3
FLOOR = 1e-10  # the probability every valid clip starts with
PEAK = 0.5  # the gold clip's share before its neighbours'


def boundary_labels(index: int, length: int, width: int) -> np.ndarray:
    """float32 [width]: the soft label of one boundary at `index` among `length` valid clips."""
    labels = np.zeros(width, dtype=np.float32)
    labels[:length] = FLOOR
    side = np.float64((1 - length * FLOOR - PEAK) / 2)  # float64 like the original's, stored as float32
    labels[index] += PEAK
    for neighbour in (index - 1, index + 1):
        if 0 <= neighbour < length:
            labels[neighbour] = side
        else:
            labels[index] += side
    return labels


def match_labels(start: int, end: int, length: int, width: int) -> np.ndarray:
    """int32 [width]: BIEO matching labels of the span (start, end) among `length` valid clips."""
    labels = np.full(width, OUTSIDE, dtype=np.int32)
    start_left, start_right = max(0, start - 1), min(start + 1, length - 1)
    end_left, end_right = max(0, end - 1), min(end + 1, length - 1)
    if start_right >= end_left:
        start_right = max(start, end_left - 1)
    labels[start_left:start_right + 1] = BEGIN
    labels[start_right + 1:end_left] = INSIDE
    labels[end_left:end_right + 1] = END  # later writes win, as in the original
    return labels


def batch_labels(starts: Sequence[int], ends: Sequence[int],
                 lengths: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start labels, end labels (float32 [B, N]) and match labels (int32 [B, N]), N = max(lengths)."""
    width = max(lengths)
    for st, et, n in zip(starts, ends, lengths):
        if not 0 <= st <= et < n:
            raise ValueError(f"span ({st}, {et}) does not lie in 0..{n - 1}")
    s_labels = np.stack([boundary_labels(st, n, width) for st, n in zip(starts, lengths)])
    e_labels = np.stack([boundary_labels(et, n, width) for et, n in zip(ends, lengths)])
    m_labels = np.stack([match_labels(st, et, n, width) for st, et, n in zip(starts, ends, lengths)])
    return s_labels, e_labels, m_labels
