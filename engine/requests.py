"""What a caller asks and gets: GroundingRequest and GroundingResult (with the result's JSON form).
Reading requests from JSON is `engine.wire`; checking them and turning them into model inputs is
`engine.prepare`."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class RegisteredVideo:
    """Features named by the id a server keeps them under (`PUT /v1/videos/{id}` of `seqpan serve`):
    the server puts that video's features in its place before the engine sees the request."""
    id: str


@dataclass
class GroundingRequest:
    """One (video, query) pair. `features` is a [T, D] numpy array, torch tensor or nested list of
    numbers, or a `.npy` path (or, on a server, a RegisteredVideo); requests that share a video (the
    same object, the same file, or the same `video_id` with equal features) share its encoding."""
    features: np.ndarray | torch.Tensor | list | str | Path | RegisteredVideo
    query: str
    duration: float | None
    video_id: str | None = None
    id: Any = None
    seed: int | None = None  # Gumbel noise seed for the matching logits; None = no noise
    video: str | Path | None = None  # a video file instead of `features` (an engine with a video source)
    top_k: int = 1  # moments to return; more than 1 adds `moments` to the result
    nms: float | None = None  # with top_k: skip moments overlapping a better one by more than this IoU
    # the values that passed `engine.prepare.check_fields`, and under which limits: none is checked twice
    checked: Any = field(default=None, init=False, repr=False, compare=False)


@dataclass
class GroundingResult:
    """The moment found for one request, or the reason it could not be served."""
    id: Any
    start: float | None = None  # seconds
    end: float | None = None
    start_index: int | None = None  # clip indices after down-sampling to max_pos_len
    end_index: int | None = None
    score: float | None = None  # p_start(start) * p_end(end)
    error: str | None = None
    moments: list[dict] | None = None  # top_k > 1: {start, end, start_index, end_index, score}, best first

    def to_json(self) -> dict:
        """The JSON object `seqpan ground` writes for this result; every value is valid JSON (an id
        that is not JSON is given as text, a number that is not finite as null)."""
        if self.error is not None:
            return {"id": json_value(self.id), "error": str(self.error)}
        out = {"id": json_value(self.id), "start": json_value(self.start), "end": json_value(self.end),
               "start_index": json_value(self.start_index), "end_index": json_value(self.end_index),
               "score": json_value(self.score)}
        return out if self.moments is None else {**out, "moments": json_value(self.moments)}


def json_value(value: Any, depth: int = 0) -> Any:
    """`value` as a valid JSON value: numpy scalars unwrapped, non-finite floats and huge ints as
    None, sequences and mappings converted (8 levels deep), anything else as its text."""
    kind = type(value)
    if kind is float:  # what a result holds, answered before the slower checks of abstract types
        return value if math.isfinite(value) else None
    if kind is int and -2**63 <= value < 2**63:
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or type(value) in (bool, str):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value) if int(value).bit_length() <= 10_000 else None
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (list, tuple)) and depth < 8:
        return [json_value(v, depth + 1) for v in value]
    if isinstance(value, dict) and depth < 8:
        return {str(json_value(k, depth + 1)): json_value(v, depth + 1) for k, v in value.items()}
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a caller's object whose __str__ fails has no text
        return None
