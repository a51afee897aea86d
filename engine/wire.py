"""The wire protocol: JSON in (strict parsing of untrusted text, a request from its JSON object, one
entry of a requests file or an HTTP body) and JSON out (a result as a line of strict JSON). The CLI and
the server read requests only through here; the fields' values are checked by `engine.prepare.check_fields`
(once: the engine does not check them again)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .data.features import FeatureError, features_from_base64
from .errors import RequestError
from .limits import Limits
from .prepare import DEFAULT_LIMITS, check_fields, check_registered_id
from .requests import GroundingRequest, GroundingResult, RegisteredVideo

JSON_FIELDS = ("features", "query", "duration")  # required; optional: id, video_id, seed, top_k, nms
BINARY_FIELDS = ("shape", "dtype", "base64")  # features as {"shape": [T, D], "dtype": "float32", "base64": ...}


def dumps_result(result: GroundingResult) -> str:
    """One result as a line of strict JSON (no NaN or Infinity)."""
    return json.dumps(result.to_json(), allow_nan=False)


def check_id(value: Any) -> Any:
    """A request id from JSON: a string, a number or null (an object or array is refused)."""
    if value is None or isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise RequestError(f"id must be a string, a number or null, got {type(value).__name__}")


def request_from_json(obj: Any, base: Path | None = None, default_id: Any = None,
                      limits: Limits = DEFAULT_LIMITS) -> GroundingRequest:
    """A request from one parsed JSON object: `features` (a `.npy` path, a [T][D] list of numbers,
    an object of binary features (see `binary_features`) or `{"registered": ID}`, a video registered
    on the server) or `video` (a video file, for an engine with a video source; `duration` then optional),
    `query`, `duration`, and optional `id` (default `default_id`), `video_id`, `seed`, `top_k` (moments
    to return, default 1) and `nms` (their overlap IoU, default none). A relative
    path is read from `base` when that is given. Unknown fields are ignored. Raises RequestError
    naming the first thing wrong (the fields by `prepare.check_fields`); the features themselves are
    checked by the engine."""
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
    elif isinstance(features, dict):
        features = RegisteredVideo(check_registered_id(features["registered"])) if set(features) == {"registered"} \
            else binary_features(features, limits)
    elif not isinstance(features, list):
        raise RequestError("features must be a path to a .npy file, a [T, D] list of numbers, "
                           '{"shape", "dtype", "base64"} or {"registered": ID}')
    request = check_fields(GroundingRequest(features, obj["query"], obj.get("duration"), video_id=obj.get("video_id"),
                                            seed=obj.get("seed"), video=video, top_k=obj.get("top_k", 1),
                                            nms=obj.get("nms")), limits)
    request.id = check_id(obj.get("id", default_id))
    return request


def binary_features(obj: Any, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """Features from the JSON object `{"shape": [T, D], "dtype": "float32", "base64": "..."}` (base64 of
    the little-endian float32 data, row-major), decoded by numpy, sized against `limits` before
    decoding; RequestError for anything else (their feature size and values are the engine's to check)."""
    if not isinstance(obj, dict) or set(obj) != set(BINARY_FIELDS):
        keys = ", ".join(map(repr, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise RequestError(f'binary features must be an object of exactly "shape", "dtype" and "base64" '
                           f'(or {{"registered": ID}}), got {keys[:200]}')
    try:
        return features_from_base64(obj["shape"], obj["dtype"], obj["base64"], limits.max_clips,
                                    limits.max_feature_bytes)
    except FeatureError as err:
        raise RequestError(str(err)) from None


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
        return STRICT_JSON.decode(text)
    except RecursionError:
        raise RequestError("JSON nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, NaN/Infinity, an integer of too many digits
        raise RequestError(f"not valid JSON: {err}") from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


STRICT_JSON = json.JSONDecoder(parse_constant=_refuse_constant)  # one decoder (json.loads builds one a call)


def json_error_id(obj: Any) -> Any:
    """The id to report an unusable JSON request under: its own when that is valid, else None."""
    try:
        return check_id(obj.get("id")) if isinstance(obj, dict) else None
    except RequestError:
        return None


def entry_from_json(text: str | bytes, label: str, default_id: Any = None, base: Path | None = None,
                    limits: Limits = DEFAULT_LIMITS) -> GroundingRequest | GroundingResult:
    """One entry of a requests file (a line) or of an HTTP body: its request, or an error result
    whose message starts with `label` (the line or the position) and whose id is the entry's own
    when that is valid. Anything wrong with the entry is its error alone."""
    try:
        obj = parse_json(text)
    except RequestError as err:
        return GroundingResult(id=None, error=f"{label}: {err}")
    return entry_from_object(obj, label, default_id, base, limits)


def entry_from_object(obj: Any, label: str, default_id: Any = None, base: Path | None = None,
                      limits: Limits = DEFAULT_LIMITS) -> GroundingRequest | GroundingResult:
    """`entry_from_json` for an entry already parsed (a JSON value, or a table's row as a dict)."""
    try:
        return request_from_json(obj, base, default_id=default_id, limits=limits)
    except RequestError as err:
        return GroundingResult(id=json_error_id(obj), error=f"{label}: {err}")


def in_input_order(entries: Sequence[Any], served: Iterable[Any]) -> list[Any]:
    """Results in the entries' order: each entry that is already an error result (a GroundingResult)
    as it is, every other entry's answer from `served` (the answers to those entries, in their order)."""
    answers = iter(served)
    return [entry if isinstance(entry, GroundingResult) else next(answers) for entry in entries]
