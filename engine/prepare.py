"""The preparation stage: every request, whatever brought it (a GroundingRequest from Python, one read
from JSON by `engine.wire`, a video file), is checked and turned into the engine's `Prepared`
inputs here, and only here: the checks of single fields, the path policy (`feature_path`: paths
allowed or not, confined to `features_root`), the video source, tokens, features and the bucket
shape. Every check raises RequestError (one line)."""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable

import numpy as np
import torch

from reference.config import SeqPANConfig
from reference.errors import SeqPANError
from reference.matching import NUM_LABELS, gumbel_noise

from .buckets import Shape, char_bucket, clip_bucket, word_bucket
from .checks import check_iou, check_positive_int
from .data.features import (FeatureError, file_identity, load_features, open_feature_file, read_features,
                            resolve_feature_path, sample_features)
from .data.text import encode, tokenize
from .errors import RequestError
from .limits import Limits
from .lru import LRU
from .requests import GroundingRequest, RegisteredVideo

DEFAULT_LIMITS = Limits()
PATHS_REFUSED = "features must be given inline (an array or a nested list of numbers): this engine reads no paths"
MAX_SEED = 2**64
CALL_TOKEN = "call token"  # the key of its call's token in a preparation cache
REGISTERED_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


# -- checks of single fields ------------------------------------------------------------------
def check_duration(value: Any, limits: Limits = DEFAULT_LIMITS) -> float:
    """A duration in seconds: a real number (numpy scalars too, not bool), finite, in (0, max_duration]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise RequestError(f"duration must be a number of seconds, got {type(value).__name__}")
    try:
        seconds = float(value)
    except (OverflowError, ValueError):
        raise RequestError("duration is too large") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise RequestError(f"duration must be a positive number of seconds, got {seconds}")
    if seconds > limits.max_duration:
        raise RequestError(f"duration {seconds:g} s is more than the limit of {limits.max_duration:g} s")
    return seconds


def check_query(value: Any, limits: Limits = DEFAULT_LIMITS) -> str:
    """A query: a string, not blank, at most max_query_chars characters."""
    if not isinstance(value, str):
        raise RequestError(f"query must be a string, got {type(value).__name__}")
    if len(value) > limits.max_query_chars:
        raise RequestError(f"query has {len(value)} characters, more than the limit of {limits.max_query_chars}")
    if not value.strip():
        raise RequestError("query is empty")
    return value


def check_seed(value: Any) -> int | None:
    """A Gumbel noise seed: None or an integer in [0, 2**64)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise RequestError(f"seed must be an integer, got {type(value).__name__}")
    if not 0 <= int(value) < MAX_SEED:
        raise RequestError("seed must lie in [0, 2**64)")
    return int(value)


def check_video_id(value: Any) -> str | None:
    """A video id: None, a string or an integer (compared as text)."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (str, numbers.Integral)):
        raise RequestError(f"video_id must be a string, got {type(value).__name__}")
    return str(value) if isinstance(value, str) else str(int(value))


def check_registered_id(value: Any) -> str:
    """The id of a registered video: 1 to 128 of A-Z a-z 0-9 . _ - (a name, never a path: not `.` or `..`)."""
    if type(value) is not str or not REGISTERED_ID.fullmatch(value) or value in (".", ".."):
        shown = repr(value[:40]) + ("..." if len(value) > 40 else "") if isinstance(value, str) else type(value).__name__
        raise RequestError(f"a registered video's id must be 1 to 128 of A-Z a-z 0-9 . _ - (not . or ..), got {shown}")
    return value


def check_top_k(top_k: Any, nms: Any, limits: Limits = DEFAULT_LIMITS) -> tuple[int, float | None]:
    """How many moments to return (an integer in [1, limits.max_top_k]) and their NMS IoU (None or in [0, 1])."""
    check_positive_int("top_k", top_k, RequestError)
    if top_k > limits.max_top_k:
        raise RequestError(f"top_k {top_k} is more than the limit of {limits.max_top_k} moments")
    return top_k, check_iou("nms", nms, RequestError)


@dataclass(frozen=True)
class Checked:
    """The values of a request's fields that passed `check_fields` under `limits` (`GroundingRequest.checked`)."""
    limits: Limits
    query: str
    duration: float | None
    video: Any
    seed: int | None
    video_id: str | None
    top_k: int
    nms: float | None


def check_fields(request: GroundingRequest, limits: Limits = DEFAULT_LIMITS) -> GroundingRequest:
    """`request` with every field but `features` and `id` checked against `limits` and in its normal
    form (a duration as a float, a video id as text; no duration needed for a `video`): a new request
    that records what passed, so that a field still holding a value that passed under the same limits
    (a JSON request's, checked by `engine.wire` for its entry's label) is not checked again. Raises
    RequestError for the first field wrong."""
    before = request.checked if isinstance(request.checked, Checked) and request.checked.limits == limits else None

    def unchanged(*names: str) -> bool:
        return before is not None and all(getattr(request, n) is getattr(before, n) for n in names)

    top_k, nms = ((request.top_k, request.nms) if unchanged("top_k", "nms")
                  else check_top_k(request.top_k, request.nms, limits))
    query = request.query if unchanged("query") else check_query(request.query, limits)
    duration = request.duration
    if not unchanged("duration", "video") and not (request.video is not None and duration is None):
        duration = check_duration(duration, limits)
    video_id = request.video_id if unchanged("video_id") else check_video_id(request.video_id)
    seed = request.seed if unchanged("seed") else check_seed(request.seed)
    checked = dataclasses.replace(request, query=query, duration=duration, seed=seed, video_id=video_id,
                                  top_k=top_k, nms=nms)
    checked.checked = Checked(limits, query, duration, request.video, seed, video_id, top_k, nms)
    return checked


def feature_path(path: str | os.PathLike, features_root: str | Path | None, allow_feature_paths: bool) -> str:
    """The path policy, for `.npy` and video paths alike: RequestError when this engine reads no paths,
    else the real path (symlinks followed), confined to `features_root` when that is given (a
    FeatureError, the same whether or not the file exists, for a path outside it)."""
    if not allow_feature_paths:
        raise RequestError(PATHS_REFUSED)
    return resolve_feature_path(path, features_root)


def video_request(request: GroundingRequest, video_source: Callable[[str], tuple[np.ndarray, float]] | None,
                  features_root: str | Path | None, allow_feature_paths: bool) -> GroundingRequest:
    """A `video` request as a features request: the video source's features of the file (its path
    under the path policy) and, without a duration, the file's."""
    if video_source is None:
        raise RequestError("video requests need an engine with a video source (seqpan ground --i3d W.pt)")
    try:
        features, duration = video_source(feature_path(request.video, features_root, allow_feature_paths))
    except SeqPANError as err:
        raise RequestError(str(err)) from None
    return with_video_features(request, features, duration)


def with_video_features(request: GroundingRequest, features: Any, duration: float) -> GroundingRequest:
    """A `video` request answered by its video's features and, unless it gives its own, duration;
    what passed `check_fields` stays passed (the file's duration is checked when the request is)."""
    served = dataclasses.replace(request, features=features, video=None,
                                 duration=duration if request.duration is None else request.duration)
    served.checked = request.checked
    return served


@dataclass(frozen=True, eq=False)
class QueryTokens:
    """A query's words as model inputs, padded to its own word and char buckets (`engine.buckets`);
    the same text always gives the same tokens, so the engine keeps them (and the query's encoding)
    per text."""
    text: str
    word_ids: torch.Tensor  # [words bucket] int64, zeros past `length`
    char_ids: torch.Tensor  # [words bucket, chars bucket] int64, left-packed, zeros past each word
    length: int  # words kept (at most max_pos_len)
    longest: int  # characters in its longest kept word


def tokenize_query(query: str, cfg: SeqPANConfig, word_dict: dict[str, int], char_dict: dict[str, int]) -> QueryTokens:
    """A checked query's tokens and ids; raises RequestError for a query with no words."""
    words = tokenize(query)
    if not words:
        raise RequestError(f"query {query[:100]!r} has no words")
    word_ids, char_ids = encode(words, word_dict, char_dict, cfg.max_pos_len)
    lengths = np.fromiter((len(c) for c in char_ids), dtype=np.int64, count=len(char_ids))
    longest = int(lengths.max())
    words_padded = np.zeros(word_bucket(len(word_ids), cfg.max_pos_len), dtype=np.int64)
    words_padded[: len(word_ids)] = word_ids
    chars_padded = np.zeros((len(words_padded), char_bucket(longest)), dtype=np.int64)
    flat = np.fromiter((c for cids in char_ids for c in cids), dtype=np.int64, count=int(lengths.sum()))
    rows = np.repeat(np.arange(len(char_ids)), lengths)
    columns = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    chars_padded[rows, columns] = flat
    return QueryTokens(query, torch.from_numpy(words_padded), torch.from_numpy(chars_padded), len(word_ids), longest)


@dataclass
class Prepared:
    """A validated request: down-sampled features, its query's tokens, and its video's sharing key."""
    features: torch.Tensor  # [clips, visual_dim] float32, CPU
    query: QueryTokens
    duration: float
    video_key: Hashable
    noise: torch.Tensor | None = None  # [clips, 4]
    top_k: int = 1
    nms: float | None = None
    shape: Shape = field(init=False)


def video_features(features: Any, video_id: str | None, cfg: SeqPANConfig, cache: dict[Hashable, torch.Tensor],
                   limits: Limits, features_root: str | Path | None, allow_feature_paths: bool,
                   files: LRU | None = None) -> tuple[torch.Tensor, Hashable]:
    """A request's down-sampled features and its video key. A file or object seen before in this
    call (one `cache`) is loaded once; requests with the same `video_id` share a key only when their
    features are equal, so no request is ever answered with another's video. A file is opened once
    and keyed by that open file's identity (device, inode, size, modification time): a path or link
    swapped meanwhile cannot give one request another file's features. `files`, when given, keeps
    files' features across calls under that identity (a file that changes gets a new one). Other
    keys hold a token of their call (`cache`), so that requests prepared in different calls never
    share a key by chance and may be batched together."""
    if isinstance(features, (str, os.PathLike)):
        with open_feature_file(feature_path(features, features_root, allow_feature_paths), features_root) as f:
            source: Hashable = ("file", file_identity(f))
            if source not in cache:
                kept = files.get(source) if files is not None else None
                if kept is None:  # errors name the caller's path
                    kept = _sampled(read_features(f, repr(str(features)), cfg.visual_dim, limits.max_clips,
                                                  limits.max_feature_bytes), cfg)
                    if files is not None:
                        files.put(source, kept)
                cache[source] = kept
    else:
        source = ("object", call_token(cache), id(features))
        if source not in cache:
            cache[source] = _sampled(load_features(features, cfg.visual_dim, max_clips=limits.max_clips,
                                                   max_bytes=limits.max_feature_bytes), cfg)
    feats = cache[source]
    if video_id is None:
        return feats, source
    shared = cache.setdefault(("id", video_id), feats)
    if shared is feats or (shared.shape == feats.shape and torch.equal(shared, feats)):
        return shared, ("id", call_token(cache), video_id)
    return feats, source


def call_token(cache: dict) -> object:
    """The token of one preparation call, kept in its `cache`: an object alive as long as a key
    holding it, so no later call can get an equal one."""
    return cache.setdefault(CALL_TOKEN, object())


def _sampled(features: np.ndarray, cfg: SeqPANConfig) -> torch.Tensor:
    """[T, D] float32 features down-sampled to at most max_pos_len clips, as a tensor."""
    return torch.from_numpy(np.ascontiguousarray(sample_features(features, cfg.max_pos_len)))


def prepare_request(request: GroundingRequest, cfg: SeqPANConfig, word_dict: dict[str, int],
                    char_dict: dict[str, int], cache: dict[Hashable, torch.Tensor], limits: Limits = DEFAULT_LIMITS,
                    features_root: str | Path | None = None, allow_feature_paths: bool = True,
                    tokens: Callable[[str], QueryTokens] | None = None, files: LRU | None = None,
                    video_source: Callable[[str], tuple[np.ndarray, float]] | None = None) -> Prepared:
    """Check one request and turn it into model inputs; raises RequestError. `cache` maps video
    keys to down-sampled features, so a video shared by several requests is loaded once; `tokens`
    (default `tokenize_query`) gives a query's tokens, e.g. from a cache of them; `files` keeps
    feature files across calls (see `video_features`); `video_source` (a video file -> its
    features and duration) serves `video` requests (see `video_request`)."""
    if not isinstance(request, GroundingRequest):
        raise RequestError(f"expected a GroundingRequest, got {type(request).__name__}")
    if isinstance(request.features, RegisteredVideo):
        raise RequestError(f"features name the registered video {request.features.id!r}: only a server keeps "
                           "registered videos (PUT /v1/videos/ID on seqpan serve)")
    if request.video is not None:
        request = video_request(request, video_source, features_root, allow_feature_paths)
    request = check_fields(request, limits)
    tokenized = (tokens(request.query) if tokens is not None
                 else tokenize_query(request.query, cfg, word_dict, char_dict))
    if tokenized.longest > limits.max_word_chars:
        raise RequestError(f"the query has a word of {tokenized.longest} characters, more than the limit of "
                           f"{limits.max_word_chars}")
    try:
        feats, key = video_features(request.features, request.video_id, cfg, cache, limits, features_root,
                                    allow_feature_paths, files)
    except FeatureError as err:
        raise RequestError(str(err)) from None
    noise = None
    if request.seed is not None:
        noise = gumbel_noise((feats.shape[0], NUM_LABELS), torch.Generator().manual_seed(request.seed))
    prepared = Prepared(feats, tokenized, request.duration, key, noise, request.top_k, request.nms)
    prepared.shape = Shape(clip_bucket(feats.shape[0], cfg.max_pos_len), tokenized.word_ids.shape[0],
                           tokenized.char_ids.shape[1])
    return prepared
