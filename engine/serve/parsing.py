"""An HTTP body `{"requests": [...]}` -> grounding requests, or for a bad entry that entry's error."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from reference.errors import SeqPANError

from ..errors import RequestError
from ..requests import GroundingRequest, GroundingResult

MAX_CLIPS = 20_000  # clips of one nested-list `features` before down-sampling (checked before allocation)
REFUSED_PATH = "features path refused: give a path inside the server's features root"
NO_PATHS = "features paths are not accepted by this server (it has no --features-root); send the clips as a list"


class BodyError(SeqPANError, ValueError):
    """A body that is not JSON, or has no `requests` list: the whole HTTP request is refused (400)."""


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_body(body: bytes, visual_dim: int, features_root: str | None) -> list[GroundingRequest | GroundingResult]:
    """One entry per element of `requests`: a request, or an error result naming its position."""
    try:
        obj = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise BodyError("body is not valid JSON: nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity
        raise BodyError(f"body is not valid JSON: {err}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("requests"), list):
        raise BodyError('body must be a JSON object {"requests": [...]}')
    entries: list[GroundingRequest | GroundingResult] = []
    for index, item in enumerate(obj["requests"]):
        try:
            entries.append(request_from_object(item, index, visual_dim, features_root))
        except RequestError as err:
            known_id = item.get("id", index) if isinstance(item, dict) else index
            entries.append(GroundingResult(id=known_id, error=f"requests[{index}]: {err}"))
    return entries


def request_from_object(obj, index: int, visual_dim: int, features_root: str | None) -> GroundingRequest:
    """One JSON request object; its id defaults to its position in `requests`."""
    if not isinstance(obj, dict):
        raise RequestError("expected a JSON object")
    missing = [k for k in ("features", "query", "duration") if k not in obj]
    if missing:
        raise RequestError(f"missing {', '.join(missing)}")
    features = obj["features"]
    if isinstance(features, list):
        features = features_array(features, visual_dim)
    elif isinstance(features, str):
        features = confined_path(features, features_root)
    else:
        raise RequestError(f"features must be a [clips][{visual_dim}] list of numbers or a .npy path")
    seed = obj.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63):
        raise RequestError(f"seed must be a non-negative integer, got {seed!r}")
    return GroundingRequest(features, obj["query"], obj["duration"], video_id=obj.get("video_id"),
                            id=obj.get("id", index), seed=seed)


def features_array(rows: list, visual_dim: int) -> np.ndarray:
    """A nested list [clips][visual_dim] of numbers as an array; its size is checked before allocation."""
    if not 0 < len(rows) <= MAX_CLIPS:
        raise RequestError(f"features must have 1 to {MAX_CLIPS} clips, got {len(rows)}")
    for clip, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != visual_dim:
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise RequestError(f"features clip {clip}: expected {visual_dim} numbers, got {got}")
    try:
        array = np.asarray(rows)
    except (ValueError, TypeError):
        raise RequestError("features must hold numbers only") from None
    if array.dtype.kind not in "iuf" or array.ndim != 2:
        raise RequestError("features must hold numbers only")
    return array


def confined_path(name: str, features_root: str | None) -> Path:
    """`name` inside `features_root` after resolving `..` and symlinks; every other path gets one
    message, so a refusal never tells whether a file exists."""
    if features_root is None:
        raise RequestError(NO_PATHS)
    root = os.path.realpath(features_root)
    if "\x00" in name or os.path.isabs(name):
        raise RequestError(REFUSED_PATH)
    resolved = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, resolved]) != root:
        raise RequestError(REFUSED_PATH)
    return Path(resolved)
