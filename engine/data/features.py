"""Clip features and moment/index conversion, as the original SeqPAN pipeline does them.

``sample_features`` is the original's ``visual_feature_sampling``; ``time_to_index`` and
``index_to_time`` are its label and answer conversions, including their float32 arithmetic.
"""
from __future__ import annotations

import base64
import binascii
import os
import stat
from typing import Any, BinaryIO

import numpy as np
import torch

from reference.errors import SeqPANError


class FeatureError(SeqPANError, ValueError):
    """A feature file or array that the engine cannot use; the message names the problem."""


class PathRefused(FeatureError):
    """A feature path outside the allowed root (or unusable there): one message for every case, so
    that it tells nothing about which files exist."""

    MESSAGE = "features path refused: give a readable .npy file under the features root"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


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


FeatureSource = str | os.PathLike | np.ndarray | torch.Tensor | list | tuple
NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"
BASE64_DTYPES = ("float32", "<f4")  # the names of the one dtype that base64 features are sent in
# Scalar types a nested list of features may hold (bool is not a number here).
LIST_NUMBER_TYPES = frozenset({int, float, *(np.dtype(c).type for c in np.typecodes["AllInteger"] + "efdg")})


def load_features(source: FeatureSource, visual_dim: int = 1024, *, max_clips: int | None = None,
                  max_bytes: int | None = None, root: str | os.PathLike | None = None) -> np.ndarray:
    """Clip features as float32 ``[T, D]`` from a ``.npy`` path, an array, a tensor or a nested list.

    ``[T, 1, D]`` and ``[1, T, D]`` arrays (and files) are squeezed to ``[T, D]``; a nested list
    must be ``[T][D]`` numbers. At most ``max_clips`` clips and ``max_bytes`` bytes of array data
    (8 bytes a value for a list) are accepted, judged from a file's header or a list's lengths
    before anything is allocated. With ``root``, a path must resolve inside it (see
    :func:`resolve_feature_path`). Raises :class:`FeatureError` for anything unusable: a missing,
    special or unreadable file, a non-numeric array, another shape, a feature size other than
    ``visual_dim``, zero clips, too much data, or NaN/inf values (also those from float32 overflow).
    """
    if isinstance(source, (str, os.PathLike)):
        with open_features(source, root) as f:
            return read_features(f, repr(str(source)), visual_dim, max_clips, max_bytes)
    if isinstance(source, np.ndarray):
        name = "features"
        check_dtype(source.dtype, name)
        clips, _ = clip_shape(source.shape, name, visual_dim)
        check_size(clips, source.nbytes, name, max_clips, max_bytes)
        array = source
    elif isinstance(source, torch.Tensor):
        name, array = "features", tensor_to_array(source, visual_dim, max_clips, max_bytes)
    elif isinstance(source, (list, tuple)):
        name, array = "features", list_to_array(source, visual_dim, max_clips, max_bytes)
    else:
        raise FeatureError(f"features must be a [T, {visual_dim}] array, a nested list of numbers or a .npy "
                           f"path, got {type(source).__name__}")
    return as_float32(array, name, visual_dim)


def open_features(path: str | os.PathLike, root: str | os.PathLike | None = None) -> BinaryIO:
    """A feature file opened once: resolved, opened, and (with ``root``) the opened file itself
    checked to lie inside the root. Read it, and key it by :func:`file_identity`, through this
    one open file: a path or link swapped meanwhile cannot change what it gives."""
    return open_feature_file(resolve_feature_path(path, root), root)


def file_identity(f: BinaryIO) -> tuple[int, int, int, int]:
    """What tells an open file from every other file and version: device, inode, size, modification time."""
    st = os.fstat(f.fileno())
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def read_features(f: BinaryIO, name: str, visual_dim: int, max_clips: int | None = None,
                  max_bytes: int | None = None) -> np.ndarray:
    """Float32 ``[T, D]`` features of an open ``.npy`` file (see :func:`load_features`); errors name ``name``."""
    return as_float32(read_npy(f, name, visual_dim, max_clips, max_bytes), name, visual_dim)


def as_float32(array: np.ndarray, name: str, visual_dim: int) -> np.ndarray:
    """A checked real array as float32 ``[T, D]``; FeatureError for NaN/inf (float32 overflow included)."""
    clips, dim = clip_shape(array.shape, name, visual_dim)
    with np.errstate(over="ignore"):  # overflow to inf is reported just below
        features = array.reshape(clips, dim).astype(np.float32)
    bad = ~np.isfinite(features)
    if bad.any():
        clip = int(np.argmax(bad.any(axis=1)))
        raise FeatureError(f"{name}: {int(bad.sum())} NaN/inf values, first in clip {clip}")
    return features


def clip_shape(shape: tuple[int, ...], name: str, visual_dim: int) -> tuple[int, int]:
    """(clips, dimension) of a features shape, ``[T, 1, D]`` and ``[1, T, D]`` squeezed; checked."""
    if len(shape) == 3 and 1 in shape[:2]:
        shape = (shape[0] * shape[1], shape[2])
    if len(shape) != 2 or min(shape) < 0:
        raise FeatureError(f"{name}: expected shape [T, {visual_dim}], got {list(shape)}")
    if shape[1] != visual_dim:
        raise FeatureError(f"{name}: expected feature dimension {visual_dim}, got {shape[1]}")
    if shape[0] == 0:
        raise FeatureError(f"{name}: has zero clips")
    return shape[0], shape[1]


def check_dtype(dtype: np.dtype, name: str) -> None:
    """Only plain integers and real floats are features."""
    if dtype.kind not in ("i", "u", "f"):  # structured and sub-array dtypes are kind "V"
        raise FeatureError(f"{name}: expected real numbers, got dtype {dtype}")


def check_size(clips: int, nbytes: int, name: str, max_clips: int | None, max_bytes: int | None) -> None:
    """Refuse a video past the clip or byte limit (computed with Python ints: no overflow)."""
    if max_clips is not None and clips > max_clips:
        raise FeatureError(f"{name}: {clips} clips, more than the limit of {max_clips}")
    if max_bytes is not None and nbytes > max_bytes:
        raise FeatureError(f"{name}: {nbytes} bytes of features, more than the limit of {max_bytes}")


def resolve_feature_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """The real path of a feature file (symlinks followed). With ``root``, a relative path is read
    from the root and the real path must be a regular file inside the root's real path, else
    :class:`PathRefused` (the same message whether or not the file exists)."""
    try:
        text = os.fspath(path)
        if not isinstance(text, str):
            raise FeatureError("features path must be text, not bytes")
        if "\0" in text:
            raise FeatureError("features path contains a NUL byte")
        if root is None:
            return os.path.realpath(text)
        base = os.path.realpath(root)
        real = os.path.realpath(os.path.join(base, text))
    except FeatureError:
        if root is not None:
            raise PathRefused() from None
        raise
    except (TypeError, ValueError, OSError):
        if root is not None:
            raise PathRefused() from None
        raise FeatureError(f"features path {path!r} is not a usable path") from None
    if os.path.commonpath([real, base]) != base or not os.path.isfile(real):
        raise PathRefused()
    return real


def open_feature_file(path: str, root: str | os.PathLike | None = None) -> BinaryIO:
    """Open a regular file for reading without blocking on a FIFO or device. With ``root``, every
    failure is :class:`PathRefused`, and the opened file itself must lie inside the root (a symlink
    swapped in after :func:`resolve_feature_path` is caught here, where /proc/self/fd exists)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise (PathRefused() if root is not None else FeatureError(f"{path!r}: feature file not found")) from None
    except OSError as err:
        raise (PathRefused() if root is not None else FeatureError(f"{path!r}: cannot open ({err.strerror})")) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PathRefused() if root is not None else FeatureError(f"{path!r}: not a regular file")
        if root is not None and os.path.isdir("/proc/self/fd"):
            opened, base = os.readlink(f"/proc/self/fd/{fd}"), os.path.realpath(root)
            if os.path.commonpath([opened, base]) != base:
                raise PathRefused()
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_npy(f: BinaryIO, name: str, visual_dim: int, max_clips: int | None, max_bytes: int | None) -> np.ndarray:
    """The array of an open ``.npy`` file, its header checked against the limits before its data
    is read; never unpickles."""
    magic = f.read(len(NPY_MAGIC))
    if magic.startswith(ZIP_MAGIC):
        raise FeatureError(f"{name}: holds several arrays (.npz), expected one .npy array")
    if magic != NPY_MAGIC:
        raise FeatureError(f"{name}: cannot read as .npy (not a NumPy .npy file)")
    version = tuple(f.read(2))
    # 3.0 differs from 2.0 only by a UTF-8 header, which only structured dtypes (refused) need
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0,
               (3, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise FeatureError(f"{name}: cannot read as .npy (unsupported format version {version})")
    try:
        shape, fortran_order, dtype = readers[version](f)
    except Exception as err:  # numpy parses the header with literal_eval: any failure is a bad header
        raise FeatureError(f"{name}: cannot read as .npy (malformed header: {err})") from None
    check_dtype(dtype, name)
    clips, dim = clip_shape(shape, name, visual_dim)
    nbytes = clips * dim * dtype.itemsize
    check_size(clips, nbytes, name, max_clips, max_bytes)
    data = f.read(nbytes)
    if len(data) < nbytes:
        raise FeatureError(f"{name}: cannot read as .npy (truncated: {len(data)} of {nbytes} bytes of data)")
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)


def features_from_base64(shape: Any, dtype: Any, text: Any, max_clips: int | None = None,
                         max_bytes: int | None = None, name: str = "features") -> np.ndarray:
    """``[T, D]`` float32 features from base64 of their little-endian float32 data, row-major, with
    their shape ``[T, D]`` (dtype ``"float32"`` or ``"<f4"``). The shape is checked against the
    limits, and the text's length against the shape, before anything is decoded; a read-only view of
    the decoded bytes is returned (its feature size and values are checked by :func:`load_features`)."""
    if type(dtype) is not str or dtype not in BASE64_DTYPES:
        raise FeatureError(f'{name}: dtype must be "float32" (little-endian), got {str(dtype)[:40]!r}')
    if (type(shape) is not list or len(shape) != 2 or any(type(n) is not int or n < 0 for n in shape)):
        raise FeatureError(f"{name}: shape must be [clips, dimension], two non-negative integers")
    clips, dim = shape
    nbytes = clips * dim * 4
    check_size(clips, nbytes, name, max_clips, max_bytes)
    if type(text) is not str or len(text) != 4 * -(-nbytes // 3):
        length = len(text) if type(text) is str else type(text).__name__
        raise FeatureError(f"{name}: base64 must be the {nbytes} bytes of a {list(shape)} float32 array "
                           f"({4 * -(-nbytes // 3)} characters), got {length}")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FeatureError(f"{name}: base64 is not valid base64 (A-Z a-z 0-9 + / and = padding only)") from None
    if len(data) != nbytes:
        raise FeatureError(f"{name}: base64 holds {len(data)} bytes, expected {nbytes} for shape {list(shape)}")
    return np.frombuffer(data, dtype="<f4").reshape(clips, dim)


def tensor_to_array(tensor: torch.Tensor, visual_dim: int, max_clips: int | None,
                    max_bytes: int | None) -> np.ndarray:
    """A dense real tensor (any device) as a float32 array, checked before it is copied."""
    real = not (tensor.dtype == torch.bool or tensor.is_complex() or tensor.is_quantized)
    if tensor.layout != torch.strided or not real:
        raise FeatureError(f"features: expected a dense tensor of real numbers, got {tensor.dtype} "
                           f"({tensor.layout})")
    clips, _ = clip_shape(tuple(tensor.shape), "features", visual_dim)
    check_size(clips, tensor.numel() * tensor.element_size(), "features", max_clips, max_bytes)
    try:
        return tensor.detach().to(device="cpu", dtype=torch.float32).numpy()
    except (RuntimeError, NotImplementedError) as err:
        raise FeatureError(f"features: cannot copy the tensor to the CPU ({err})") from None


def list_to_array(rows: list | tuple, visual_dim: int, max_clips: int | None, max_bytes: int | None) -> np.ndarray:
    """A ``[T][D]`` nested list of numbers as a float64 array; lengths and types are checked first."""
    check_size(len(rows), len(rows) * visual_dim * 8, "features", max_clips, max_bytes)
    for i, row in enumerate(rows):
        if type(row) not in (list, tuple) or len(row) != visual_dim:
            raise FeatureError(f"features: clip {i} is not a list of {visual_dim} numbers")
        if not all(type(x) in LIST_NUMBER_TYPES for x in row):
            raise FeatureError(f"features: clip {i} holds something other than numbers")
    if not rows:
        raise FeatureError("features: has zero clips")
    try:
        return np.array(rows, dtype=np.float64)
    except OverflowError:
        raise FeatureError("features: a value is too large for a float") from None
