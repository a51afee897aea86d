"""Property-based fuzzing of feature loading (issue #11): `.npy` files with generated headers, data
and corruption, and inline arrays, lists and tensors.

Invariants: load_features returns a finite float32 [T, D] array or raises FeatureError (one line);
it agrees with numpy's own reader on every file numpy reads as a valid [T, D] real array within the
limits; and it never allocates much past the byte limit, whatever the header claims.
"""
from __future__ import annotations

import io
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import torch
from hypothesis import event, given
from hypothesis import strategies as st

from engine.data.features import FeatureError, load_features
from tests.helpers import fuzz_settings

D = 4
MAX_CLIPS, MAX_BYTES = 1000, 64 * 1024
DESCRS = ["<f4", ">f8", "<f2", "<i2", ">u4", "|i1", "|b1", "<c8", "|O", "<U3", "|V8", "<M8[s]",
          "[('a', '<f4')]", "('<f4', (2,))", "garbage", "<f16", "<f4 ", "'<f4'"]


@st.composite
def npy_files(draw) -> bytes:
    """A .npy file: a version, a header dict text (maybe broken), data (maybe short or long)."""
    version = draw(st.sampled_from([(1, 0), (2, 0), (1, 0), (3, 0), (0, 1)]))
    descr = draw(st.sampled_from(DESCRS))
    dims = st.one_of(st.integers(0, 12), st.just(D), st.just(1), st.integers(-3, 10**30))
    shape = draw(st.one_of(st.lists(dims, max_size=4).map(tuple), st.just((draw(st.integers(0, 12)), D)),
                           st.just((draw(st.integers(0, 12)), 1, D)), st.sampled_from(["(3.5, 4)", "[3, 4]", "'x'"])))
    fortran = draw(st.sampled_from(["False", "True", "'yes'", "0"]))
    descr_text = descr if descr.startswith(("[", "(")) else repr(descr)
    entries = [f"'descr': {descr_text}", f"'fortran_order': {fortran}", f"'shape': {shape}"]
    entries = draw(st.permutations(entries))[: draw(st.integers(2, 3))]
    header = ("{" + ", ".join(entries) + ", }").encode("latin1")
    header += draw(st.sampled_from([b"", b" " * 40, b"((((", b"\xff"]))
    header = header + b" " * (-(len(header) + 11) % 64) + b"\n"
    size = len(header).to_bytes(2 if version[0] == 1 else 4, "little")
    dims_ok = isinstance(shape, tuple) and all(d >= 0 for d in shape)
    count = min(int(np.prod(shape, dtype=object)), 4096) if dims_ok else draw(st.integers(0, 40))
    data = np.random.default_rng(draw(st.integers(0, 99))).standard_normal(count).astype("<f8").tobytes()
    data = data[: draw(st.one_of(st.just(len(data)), st.integers(0, len(data))))]
    body = b"\x93NUMPY" + bytes(version) + size + header + data
    if draw(st.integers(0, 4)) == 0:  # a flipped byte anywhere
        where = draw(st.integers(0, len(body) - 1))
        body = body[:where] + bytes([body[where] ^ draw(st.integers(1, 255))]) + body[where + 1:]
    return body


def numpy_reads_as_valid(path: Path):
    """numpy's own reading of the file, when it is a valid [T, D] (or [T,1,D], [1,T,D]) real array
    within the limits; else None."""
    try:
        with open(path, "rb") as f:  # numpy's own header reader first: load only what is small
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
        if int(np.prod(shape, dtype=object)) * dtype.itemsize > MAX_BYTES:
            return None
        array = np.load(path, allow_pickle=False)
    except Exception:  # noqa: BLE001 - numpy refusing the file is a possible outcome
        return None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iuf" or array.dtype.names is not None:
        return None
    if array.ndim == 3 and 1 in array.shape[:2]:
        array = array.reshape(-1, array.shape[2])
    if array.ndim != 2 or array.shape[1] != D or not 1 <= array.shape[0] <= MAX_CLIPS or array.nbytes > MAX_BYTES:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        converted = array.astype(np.float32)
    return converted if np.isfinite(converted).all() else None


@fuzz_settings(300)
@given(npy_files())
def test_fuzz_npy_files_load_or_fail_in_one_line_within_the_limits(body):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.npy"
        path.write_bytes(body)
        expected = numpy_reads_as_valid(path)
        tracemalloc.start()
        try:
            got = load_features(path, D, max_clips=MAX_CLIPS, max_bytes=MAX_BYTES)
        except FeatureError as err:
            got = err
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    assert peak < 4 * MAX_BYTES + 2**20
    event("loaded" if expected is not None else "refused")
    if isinstance(got, FeatureError):
        assert "\n" not in str(got) and expected is None, str(got)
    else:
        assert got.dtype == np.float32 and got.ndim == 2 and got.shape[1] == D and np.isfinite(got).all()
        np.testing.assert_array_equal(got, expected)


@fuzz_settings(200)
@given(st.one_of(
    st.lists(st.lists(st.one_of(st.floats(), st.integers(-10**40, 10**40), st.booleans(), st.text(max_size=1),
                                st.none(), st.lists(st.integers(), max_size=2)), max_size=D + 1), max_size=5),
    st.lists(st.lists(st.floats(-1e3, 1e3), min_size=D, max_size=D), min_size=1, max_size=5).map(tuple),
    st.builds(lambda shape, dtype: torch.ones(shape, dtype=dtype), st.lists(st.integers(0, 5), max_size=3),
              st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool, torch.complex64])),
    st.recursive(st.floats(), lambda c: st.lists(c, max_size=3), max_leaves=20),
))
def test_fuzz_inline_features_are_converted_or_refused(source):
    try:
        got = load_features(source, D, max_clips=MAX_CLIPS, max_bytes=MAX_BYTES)
    except FeatureError as err:
        assert "\n" not in str(err)
        return
    assert got.dtype == np.float32 and got.ndim == 2 and got.shape[1] == D and np.isfinite(got).all()
    expected = source.float().numpy() if isinstance(source, torch.Tensor) else np.array(source, dtype=np.float32)
    np.testing.assert_array_equal(got, expected.reshape(got.shape))


def test_reading_from_a_stream_position_is_not_assumed():
    """read_npy reads from where the header ends, not from offsets it assumes."""
    buffer = io.BytesIO()
    np.save(buffer, np.arange(8, dtype=np.float32).reshape(2, D))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.npy"
        path.write_bytes(buffer.getvalue())
        np.testing.assert_array_equal(load_features(path, D), np.arange(8).reshape(2, D))
