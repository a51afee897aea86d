"""What a caller asks and gets: GroundingRequest, GroundingResult, a request from its JSON object, and a
request checked and turned into model inputs. Every check here raises RequestError (one line)."""
from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable

import numpy as np
import torch

from reference.config import SeqPANConfig
from reference.matching import NUM_LABELS, gumbel_noise

from .buckets import Shape, char_bucket, clip_bucket, word_bucket
from .checks import check_iou, check_positive_int
from .data.features import FeatureError, file_identity, load_features, open_features, read_features, sample_features
from .data.text import encode, tokenize
from .errors import RequestError
from .limits import Limits
from .lru import LRU

DEFAULT_LIMITS = Limits()
PATHS_REFUSED = "features must be given inline (an array or a nested list of numbers): this engine reads no paths"
JSON_FIELDS = ("features", "query", "duration")  # required; optional: id, video_id, seed, top_k, nms
MAX_SEED = 2**64

@dataclass
class GroundingRequest:
    """One (video, query) pair. `features` is a [T, D] numpy array, torch tensor or nested list of
    numbers, or a `.npy` path; requests that share a video (the same object, the same file, or the
    same `video_id` with equal features) share its encoding."""
    features: np.ndarray | torch.Tensor | list | str | Path
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
        """The JSON object `seqpan ground` writes for this result; every value is valid JSON (an id
        that is not JSON is given as text, a number that is not finite as null)."""
        if self.error is not None:
            return {"id": json_value(self.id), "error": str(self.error)}
        out = {"id": json_value(self.id), "start": json_value(self.start), "end": json_value(self.end),
               "start_index": json_value(self.start_index), "end_index": json_value(self.end_index),
               "score": json_value(self.score)}
        return out if self.moments is None else {**out, "moments": json_value(self.moments)}


def dumps_result(result: GroundingResult) -> str:
    """One result as a line of strict JSON (no NaN or Infinity)."""
    return json.dumps(result.to_json(), allow_nan=False)


def json_value(value: Any, depth: int = 0) -> Any:
    """`value` as a valid JSON value: numpy scalars unwrapped, non-finite floats and huge ints as
    None, sequences and mappings converted (8 levels deep), anything else as its text."""
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


def check_top_k(top_k: Any, nms: Any, limits: Limits = DEFAULT_LIMITS) -> tuple[int, float | None]:
    """How many moments to return (an integer in [1, limits.max_top_k]) and their NMS IoU (None or in [0, 1])."""
    check_positive_int("top_k", top_k, RequestError)
    if top_k > limits.max_top_k:
        raise RequestError(f"top_k {top_k} is more than the limit of {limits.max_top_k} moments")
    return top_k, check_iou("nms", nms, RequestError)


def check_id(value: Any) -> Any:
    """A request id from JSON: a string, a number or null (an object or array is refused)."""
    if value is None or isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise RequestError(f"id must be a string, a number or null, got {type(value).__name__}")


def request_from_json(obj: Any, base: Path | None = None, default_id: Any = None,
                      limits: Limits = DEFAULT_LIMITS) -> GroundingRequest:
    """A request from one parsed JSON object: `features` (a `.npy` path, or a [T][D] list of
    numbers) or `video` (a video file, for an engine with a video source; `duration` then optional),
    `query`, `duration`, and optional `id` (default `default_id`), `video_id`, `seed`, `top_k` (moments
    to return, default 1) and `nms` (their overlap IoU, default none). A relative
    path is read from `base` when that is given. Unknown fields are ignored. Raises RequestError
    naming the first thing wrong; the features themselves are checked by the engine."""
    if not isinstance(obj, dict):
        raise RequestError(f"expected a JSON object, got {type(obj).__name__}")
    video = obj.get("video") if "features" not in obj else None
    required = ("query",) if isinstance(video, str) else JSON_FIELDS
    missing = [k for k in required if k not in obj]
    if missing:
        raise RequestError(f"missing {', '.join(missing)}")
    features = obj.get("features")
    if isinstance(video, str):
        video = _from_base(video, base)
    elif isinstance(features, str):
        features = _from_base(features, base)
    elif not isinstance(features, list):
        raise RequestError("features must be a path to a .npy file or a [T, D] list of numbers")
    duration = obj.get("duration")
    top_k, nms = check_top_k(obj.get("top_k", 1), obj.get("nms"), limits)
    return GroundingRequest(features, check_query(obj["query"], limits),
                            None if video is not None and duration is None else check_duration(duration, limits),
                            video_id=check_video_id(obj.get("video_id")), id=check_id(obj.get("id", default_id)),
                            seed=check_seed(obj.get("seed")), video=video, top_k=top_k, nms=nms)


def _from_base(path_text: str, base: Path | None) -> Path:
    path = Path(path_text)
    return base / path if base is not None and not path.is_absolute() else path


def parse_json(text: str | bytes) -> Any:
    """Strict JSON from untrusted text: UTF-8 only, no NaN/Infinity, nesting as deep as Python's
    recursion allows; anything else is a RequestError."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise RequestError(f"not valid UTF-8 (byte 0x{err.object[err.start]:02x} at offset {err.start})") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise RequestError("JSON nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, NaN/Infinity, an integer of too many digits
        raise RequestError(f"not valid JSON: {err}") from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def json_error_id(obj: Any) -> Any:
    """The id to report an unusable JSON request under: its own when that is valid, else None."""
    try:
        return check_id(obj.get("id")) if isinstance(obj, dict) else None
    except RequestError:
        return None


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
    call is loaded once; requests with the same `video_id` share a key only when their features
    are equal, so no request is ever answered with another's video. A file is opened once and
    keyed by that open file's identity (device, inode, size, modification time): a path or link
    swapped meanwhile cannot give one request another file's features. `files`, when given, keeps
    files' features across calls under that identity (a file that changes gets a new one)."""
    if isinstance(features, (str, os.PathLike)):
        if not allow_feature_paths:
            raise RequestError(PATHS_REFUSED)
        with open_features(features, features_root) as f:
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
        source = ("object", id(features))
        if source not in cache:
            cache[source] = _sampled(load_features(features, cfg.visual_dim, max_clips=limits.max_clips,
                                                   max_bytes=limits.max_feature_bytes), cfg)
    feats = cache[source]
    if video_id is None:
        return feats, source
    shared = cache.setdefault(("id", video_id), feats)
    if shared is feats or (shared.shape == feats.shape and torch.equal(shared, feats)):
        return shared, ("id", video_id)
    return feats, source


def _sampled(features: np.ndarray, cfg: SeqPANConfig) -> torch.Tensor:
    """[T, D] float32 features down-sampled to at most max_pos_len clips, as a tensor."""
    return torch.from_numpy(np.ascontiguousarray(sample_features(features, cfg.max_pos_len)))


def prepare_request(request: GroundingRequest, cfg: SeqPANConfig, word_dict: dict[str, int],
                    char_dict: dict[str, int], cache: dict[Hashable, torch.Tensor], limits: Limits = DEFAULT_LIMITS,
                    features_root: str | Path | None = None, allow_feature_paths: bool = True,
                    tokens: Callable[[str], QueryTokens] | None = None, files: LRU | None = None) -> Prepared:
    """Check one request and turn it into model inputs; raises RequestError. `cache` maps video
    keys to down-sampled features, so a video shared by several requests is loaded once; `tokens`
    (default `tokenize_query`) gives a query's tokens, e.g. from a cache of them; `files` keeps
    feature files across calls (see `video_features`)."""
    if not isinstance(request, GroundingRequest):
        raise RequestError(f"expected a GroundingRequest, got {type(request).__name__}")
    duration = check_duration(request.duration, limits)
    query = check_query(request.query, limits)
    seed = check_seed(request.seed)
    video_id = check_video_id(request.video_id)
    top_k, nms = check_top_k(request.top_k, request.nms, limits)
    tokenized = tokens(query) if tokens is not None else tokenize_query(query, cfg, word_dict, char_dict)
    if tokenized.longest > limits.max_word_chars:
        raise RequestError(f"the query has a word of {tokenized.longest} characters, more than the limit of "
                           f"{limits.max_word_chars}")
    try:
        feats, key = video_features(request.features, video_id, cfg, cache, limits, features_root,
                                    allow_feature_paths, files)
    except FeatureError as err:
        raise RequestError(str(err)) from None
    noise = None
    if seed is not None:
        noise = gumbel_noise((feats.shape[0], NUM_LABELS), torch.Generator().manual_seed(seed))
    prepared = Prepared(feats, tokenized, duration, key, noise, top_k, nms)
    prepared.shape = Shape(clip_bucket(feats.shape[0], cfg.max_pos_len), tokenized.word_ids.shape[0],
                           tokenized.char_ids.shape[1])
    return prepared
