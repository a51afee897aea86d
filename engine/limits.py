"""Limits: how much work one request may ask for, checked before anything is allocated for it."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from .errors import UsageError


@dataclass(frozen=True)
class Limits:
    """Bounds on one request. A request past any of them gets a one-line error; nothing is
    allocated for it first (a `.npy` file is judged by its header, a list by its lengths).

    The defaults admit every query and video of Charades-STA, ActivityNet Captions and TACoS
    with a wide margin, and far more moments than a user reads.
    """

    max_query_chars: int = 2_000  # characters of the query text
    max_word_chars: int = 64  # characters of one word among those the model reads (the first max_pos_len)
    max_clips: int = 50_000  # clips of a video before down-sampling to max_pos_len
    max_feature_bytes: int = 256 * 2**20  # a .npy file's array data, or an inline array's (lists: 8 bytes a value)
    max_duration: float = 1e7  # seconds (116 days); keeps every answer a finite float32 time
    max_top_k: int = 100  # moments one request may ask for (with NMS their choice is quadratic in K)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "max_duration":
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf
            else:
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            if not ok:
                raise UsageError(f"Limits.{f.name} must be a positive {f.type}, got {value!r}")
