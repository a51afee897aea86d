"""What a caller asks and gets: GroundingRequest, GroundingResult, and a request turned into model inputs."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable

import numpy as np
import torch

from reference.config import SeqPANConfig
from reference.matching import NUM_LABELS, gumbel_noise

from .batching import Shape, char_bucket, clip_bucket, word_bucket
from .data.features import FeatureError, load_features, sample_features
from .data.text import encode, tokenize
from .errors import RequestError


@dataclass
class GroundingRequest:
    """One (video, query) pair. `features` is a [T, D] array or a `.npy` path; requests that share a
    video (the same array object, the same path, or the same `video_id`) share its encoding."""
    features: np.ndarray | str | Path
    query: str
    duration: float | None
    video_id: str | None = None
    id: Any = None
    seed: int | None = None  # Gumbel noise seed for the matching logits; None = no noise
    video: str | Path | None = None  # a video file instead of `features` (an engine with a video source)
    top_k: int = 1  # moments to return; more than 1 adds `moments` to the result
    nms: float | None = None  # with top_k: skip moments overlapping a better one by more than this IoU


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
        """The JSON object `seqpan ground` writes for this result."""
        if self.error is not None:
            return {"id": self.id, "error": self.error}
        out = {"id": self.id, "start": self.start, "end": self.end, "start_index": self.start_index,
               "end_index": self.end_index, "score": self.score}
        return out if self.moments is None else {**out, "moments": self.moments}


@dataclass
class Prepared:
    """A validated request: down-sampled features, encoded words, and its sharing key."""
    features: torch.Tensor  # [clips, visual_dim] float32, CPU
    word_ids: list[int]
    char_ids: list[list[int]]
    duration: float
    video_key: Hashable
    noise: torch.Tensor | None = None  # [clips, 4]
    top_k: int = 1
    nms: float | None = None
    shape: Shape = field(init=False)


def video_key(request: GroundingRequest) -> Hashable:
    """What makes two requests share a video: explicit id, same file, or the same array object."""
    if request.video_id is not None:
        return ("id", str(request.video_id))
    if isinstance(request.features, (str, Path)):
        return ("path", os.path.realpath(request.features))
    return ("array", id(request.features))


def prepare_request(request: GroundingRequest, cfg: SeqPANConfig, word_dict: dict[str, int],
                    char_dict: dict[str, int], cache: dict[Hashable, torch.Tensor]) -> Prepared:
    """Validate one request and turn it into model inputs; raises RequestError. `cache` maps video
    keys to down-sampled features, so a video shared by several requests is loaded once."""
    duration = request.duration
    if duration is None or isinstance(duration, bool) or not isinstance(duration, (int, float)):
        raise RequestError(f"duration must be a number of seconds, got {duration!r}")
    if not math.isfinite(duration) or duration <= 0:
        raise RequestError(f"duration must be a positive number of seconds, got {duration}")
    if not isinstance(request.query, str) or not request.query.strip():
        raise RequestError("query is empty")
    words = tokenize(request.query)
    if not words:
        raise RequestError(f"query {request.query!r} has no words")
    word_ids, char_ids = encode(words, word_dict, char_dict, cfg.max_pos_len)
    key = video_key(request)
    if key not in cache:
        try:
            raw = load_features(request.features, cfg.visual_dim)
        except FeatureError as err:
            raise RequestError(str(err)) from None
        cache[key] = torch.from_numpy(np.ascontiguousarray(sample_features(raw, cfg.max_pos_len), dtype=np.float32))
    feats = cache[key]
    noise = None
    if request.seed is not None:
        noise = gumbel_noise((feats.shape[0], NUM_LABELS), torch.Generator().manual_seed(request.seed))
    top_k, nms = request.top_k, request.nms
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise RequestError(f"top_k must be an integer of at least 1, got {top_k!r}")
    if nms is not None and (isinstance(nms, bool) or not isinstance(nms, (int, float)) or not 0 <= nms <= 1):
        raise RequestError(f"nms must be an IoU between 0 and 1, got {nms!r}")
    prepared = Prepared(feats, word_ids, char_ids, float(duration), key, noise, top_k, nms)
    prepared.shape = Shape(clip_bucket(feats.shape[0], cfg.max_pos_len), word_bucket(len(word_ids)),
                           char_bucket(max(len(c) for c in char_ids)))
    return prepared
