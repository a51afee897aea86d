"""Clip features and moment/index conversion, as the original SeqPAN pipeline does them.

``sample_features`` is the original's ``visual_feature_sampling``; ``time_to_index`` and
``index_to_time`` are its label and answer conversions, including their float32 arithmetic.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from reference.errors import SeqPANError


class FeatureError(SeqPANError, ValueError):
    """A feature file or array that the engine cannot use; the message names the problem."""


def sample_features(features: np.ndarray, max_pos_len: int) -> np.ndarray:
    """Mean-pool ``[T, D]`` clip features down to ``max_pos_len`` clips when T is larger.

    Boundaries are ``round(i / max_pos_len * T)`` for i = 0..max_pos_len (NumPy rounds
    halves to even), capped at T - 1; clip i is the mean of rows ``[b_i, b_(i+1))``, or row
    ``b_i`` alone when that range is empty. As in the original, the capped last boundary
    leaves row T - 1 out of the last mean. T <= max_pos_len returns ``features`` itself.
    Sums run in float64, so float32 results are within 1e-6 of the original's float32 means.
    """
    if max_pos_len < 1:
        raise ValueError(f"max_pos_len must be at least 1, got {max_pos_len}")
    num_clips = features.shape[0]
    if num_clips <= max_pos_len:
        return features
    bounds = np.round(np.arange(0, max_pos_len + 1, 1.0) / max_pos_len * num_clips)
    bounds = np.minimum(bounds.astype(np.int64), num_clips - 1)
    starts, stops = bounds[:-1], bounds[1:]
    # reduceat over (start, stop) pairs sums rows [start, stop), or gives row start when
    # start >= stop: exactly the original's two cases. Every stop is a valid row (<= T - 1).
    pairs = np.stack([starts, stops], axis=1).reshape(-1)
    sums = np.add.reduceat(features, pairs, axis=0, dtype=np.float64)[::2]
    counts = np.where(starts < stops, stops - starts, 1)
    counts = counts.reshape((-1,) + (1,) * (features.ndim - 1))
    out_dtype = features.dtype if np.issubdtype(features.dtype, np.floating) else np.float64
    return (sums / counts).astype(out_dtype)


def time_to_index(start: float, end: float, num_units: int, duration: float) -> tuple[int, int]:
    """The original's label: the unit span (s, e) with the highest IoU with [start, end].

    Every pair of unit start i and unit end j is a candidate, i > j included, with times
    ``i / n * duration`` and ``(j + 1) / n * duration`` in float32; IoU is
    ``max(0, inter) / max(1e-12, union)`` in float64 and the first maximum of the flattened
    n x n matrix wins.
    """
    if num_units < 1:
        raise ValueError(f"num_units must be at least 1, got {num_units}")
    n, duration = float(num_units), float(duration)
    s = (np.arange(0, num_units).astype(np.float32) / n * duration).astype(np.float64)[:, None]
    e = (np.arange(1, num_units + 1).astype(np.float32) / n * duration).astype(np.float64)[None, :]
    inter = np.maximum(0.0, np.minimum(e, end) - np.maximum(s, start))
    union = np.maximum(1e-12, np.maximum(e, end) - np.minimum(s, start))
    best = int(np.argmax(inter / union))
    return best // num_units, best % num_units


def index_to_time(s_idx: int, e_idx: int, num_units: int, duration: float) -> tuple[float, float]:
    """The original's answer in seconds: unit s_idx's start and unit e_idx's end.

    Times are ``i * duration / n`` computed in float32, as the original does.
    """
    if not (0 <= s_idx < num_units and 0 <= e_idx < num_units):
        raise ValueError(f"indices ({s_idx}, {e_idx}) out of range for {num_units} units")
    starts = np.arange(0, num_units).astype(np.float32) * float(duration) / float(num_units)
    ends = np.arange(1, num_units + 1).astype(np.float32) * float(duration) / float(num_units)
    return float(starts[s_idx]), float(ends[e_idx])


def load_features(
    path_or_array: str | os.PathLike[str] | np.ndarray, visual_dim: int = 1024
) -> np.ndarray:
    """Clip features as float32 ``[T, D]`` from a ``.npy`` path or an array, checked.

    ``[T, 1, D]`` and ``[1, T, D]`` are squeezed to ``[T, D]``. Raises :class:`FeatureError`
    for a missing or unreadable file, a non-numeric array, another shape, a feature size
    other than ``visual_dim``, zero clips, or NaN/inf values (also those from float32
    overflow).
    """
    if isinstance(path_or_array, np.ndarray):
        array, source = path_or_array, "features"
    else:
        path = Path(path_or_array)
        source = str(path)
        if not path.is_file():
            raise FeatureError(f"{source}: feature file not found")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise FeatureError(f"{source}: cannot read as .npy ({error})") from error
        if not isinstance(array, np.ndarray):
            array.close()
            raise FeatureError(f"{source}: holds several arrays (.npz), expected one .npy array")
    real = np.issubdtype(array.dtype, np.number) and not np.iscomplexobj(array)
    if array.dtype == np.bool_ or not real:
        raise FeatureError(f"{source}: expected real numbers, got dtype {array.dtype}")
    if array.ndim == 3 and 1 in array.shape[:2]:
        array = array.reshape(array.shape[0] * array.shape[1], array.shape[2])
    if array.ndim != 2:
        raise FeatureError(f"{source}: expected shape [T, {visual_dim}], got {list(array.shape)}")
    if array.shape[1] != visual_dim:
        got = array.shape[1]
        raise FeatureError(f"{source}: expected feature dimension {visual_dim}, got {got}")
    if array.shape[0] == 0:
        raise FeatureError(f"{source}: has zero clips")
    with np.errstate(over="ignore"):  # overflow to inf is reported just below
        features = array.astype(np.float32)
    bad = ~np.isfinite(features)
    if bad.any():
        clip = int(np.argmax(bad.any(axis=1)))
        raise FeatureError(f"{source}: {int(bad.sum())} NaN/inf values, first in clip {clip}")
    return features
