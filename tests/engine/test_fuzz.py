"""Property-based fuzzing of the engine, JSON requests and the micro-batcher (issue #11).

Invariants: the engine never raises, whatever the requests hold; a good request's answer equals its
answer alone; every bad one gets a one-line error that names it (never an internal error); every
result is strict JSON; the batcher resolves every future it accepted, whatever is cancelled, fails
or closes, and only a request that fails alone gets an exception.
"""
from __future__ import annotations

import json
import math
import os
import threading
from concurrent.futures import CancelledError

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from engine import (BatcherClosedError, GroundingRequest, MicroBatcher, QueueFullError, RequestError,
                    request_from_json)
from engine.wire import dumps_result
from tests.engine.test_engine import CFG, WORDS, make_engine
from tests.helpers import SCORE_RTOL, GroundOnlyEngine, fuzz_settings, scratch_folder

ENGINE = make_engine(max_batch=3)  # small batches: a fuzzed list spans several
D = CFG.visual_dim
FILES = scratch_folder("seqpan-fuzz-")


def _make_files() -> dict[str, str]:
    """Feature files good and bad; their names."""
    gen = np.random.default_rng(0)
    np.save(FILES / "good.npy", gen.standard_normal((20, D)).astype(np.float32))
    np.save(FILES / "long.npy", gen.standard_normal((3 * CFG.max_pos_len, D)))
    np.save(FILES / "int.npy", gen.integers(-5, 5, (7, 1, D)).astype(np.int16))
    np.save(FILES / "nan.npy", np.full((3, D), np.nan, np.float32))
    np.save(FILES / "object.npy", np.array([[None] * D], dtype=object), allow_pickle=True)
    (FILES / "text.npy").write_text("not an array")
    with open(FILES / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**12, D)})
    (FILES / "folder").mkdir()
    os.mkfifo(FILES / "fifo.npy")
    names = ("good.npy", "long.npy", "int.npy", "nan.npy", "object.npy", "text.npy", "huge.npy", "folder", "fifo.npy",
             "missing.npy")
    return {name: str(FILES / name) for name in names}


PATHS = _make_files()
GOOD_PATHS = ("good.npy", "long.npy", "int.npy")

good_features = st.one_of(
    st.builds(lambda clips, seed: np.random.default_rng(seed).standard_normal((clips, D)).astype(np.float32),
              st.integers(1, 3 * CFG.max_pos_len), st.integers(0, 2**16)),
    st.sampled_from(GOOD_PATHS).map(PATHS.get),
    st.builds(lambda clips, seed: np.random.default_rng(seed).standard_normal((clips, D)).round(2).tolist(),
              st.integers(1, 40), st.integers(0, 99)),
    st.builds(lambda clips, dtype: torch.arange(clips * D, dtype=dtype).reshape(clips, D) % 7,
              st.integers(1, 40), st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.int32])),
)
bad_features = st.one_of(
    hnp.arrays(st.sampled_from([np.float32, np.float64, np.int8, np.bool_, np.complex64, np.float16, "U2"]),
               hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)
               | st.tuples(st.integers(0, 3), st.integers(D - 1, D + 1))),
    hnp.arrays(np.float32, st.tuples(st.integers(1, 9), st.just(D)), elements=st.floats(width=32)),
    st.sampled_from(sorted(set(PATHS) - set(GOOD_PATHS))).map(PATHS.get),
    st.sampled_from(["", "\0", "a\0b.npy", "/", "../" * 30 + "etc/passwd", "x" * 5000]),
    st.lists(st.lists(st.one_of(st.floats(), st.integers(-10**30, 10**30), st.text(max_size=2), st.none()),
                      max_size=D + 1), max_size=4),
    st.one_of(st.none(), st.integers(), st.floats(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
              st.binary(max_size=4)),
)
good_queries = st.lists(st.sampled_from(WORDS + ["zebra", "the", "."]), min_size=1, max_size=12).map(" ".join)
bad_queries = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=60),  # surrogates and controls included
    st.text(st.sampled_from("ab .'-\u0301\u00b2"), min_size=60, max_size=2100),
    st.none(), st.integers(), st.lists(st.text(max_size=3), max_size=2), st.binary(max_size=5),
)
good_durations = st.one_of(st.floats(0.01, 1e7), st.integers(1, 10**7),
                           st.floats(0.01, 1e4).map(np.float32), st.integers(1, 10**4).map(np.int64))
bad_durations = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not 0 < x <= 1e7),
    st.integers(max_value=0), st.integers(min_value=10**7 + 1, max_value=10**600),
    st.none(), st.booleans(), st.text(max_size=4), st.just(np.bool_(True)), st.just(complex(1, 1)),
)
good_seeds = st.one_of(st.none(), st.integers(0, 2**64 - 1), st.integers(0, 99).map(np.uint32))
bad_seeds = st.one_of(st.integers(max_value=-1), st.integers(min_value=2**64), st.floats(), st.text(max_size=3),
                      st.booleans())
good_video_ids = st.one_of(st.none(), st.sampled_from(["v1", "v2"]), st.integers(0, 3))
bad_video_ids = st.one_of(st.floats(), st.lists(st.integers(), max_size=2), st.booleans())
ids = st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8),
                st.tuples(st.text(max_size=3), st.integers()), st.just(object()))


@st.composite
def requests(draw):
    """(request, whether every field was drawn from the good values)."""
    fields = {}
    good = True
    for name, ok, bad in (("features", good_features, bad_features), ("query", good_queries, bad_queries),
                          ("duration", good_durations, bad_durations), ("seed", good_seeds, bad_seeds),
                          ("video_id", good_video_ids, bad_video_ids)):
        use_bad = draw(st.integers(0, 5)) == 0
        fields[name] = draw(bad if use_bad else ok)
        good &= not use_bad
    if draw(st.integers(0, 30)) == 0:
        return draw(st.one_of(st.none(), st.just(fields), st.text(max_size=3))), False
    return GroundingRequest(id=draw(ids), **fields), good


def strict_json(result) -> dict:
    def refuse(name):
        raise ValueError(name)
    return json.loads(dumps_result(result), parse_constant=refuse)


def same_outcome(got, alone) -> bool:
    if got.error is not None or alone.error is not None:
        return got.error == alone.error
    return ((got.start_index, got.end_index, got.start, got.end) == (alone.start_index, alone.end_index, alone.start,
                                                                     alone.end)
            and math.isclose(got.score, alone.score, rel_tol=SCORE_RTOL))


@fuzz_settings(50)
@given(st.lists(requests(), min_size=1, max_size=6))
def test_fuzz_engine_serves_each_request_as_if_alone(drawn):
    batch = [request for request, _ in drawn]
    results = ENGINE.ground(batch)
    assert len(results) == len(batch)
    for (request, good), result in zip(drawn, results):
        assert result.id is getattr(request, "id", None)
        line = strict_json(result)
        if good:
            assert result.error is None, result.error
            assert 0 <= result.start_index <= result.end_index < CFG.max_pos_len and 0 <= result.start <= result.end
            assert 0 < result.score <= 1
        if not isinstance(request, GroundingRequest):
            assert result.error.startswith("expected a GroundingRequest")
        if result.error is not None:
            assert line == {"id": line["id"], "error": result.error}
            assert "\n" not in result.error and not result.error.startswith("internal error"), result.error
        assert same_outcome(result, ENGINE.ground([request])[0])


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=False),
                         st.text(max_size=10))
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=5), children, max_size=3), max_leaves=10)
json_requests = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={
        "features": st.one_of(st.sampled_from(["good.npy", "text.npy", "missing.npy", "/etc/passwd", "../x.npy"]),
                              st.lists(st.lists(st.floats(-3, 3), min_size=D, max_size=D), min_size=1, max_size=3),
                              json_values),
        "query": st.one_of(good_queries, st.text(max_size=30), json_values),
        "duration": st.one_of(st.floats(0.1, 100), st.integers(-5, 10**30), json_values),
        "id": st.one_of(st.text(max_size=5), st.integers(), json_values),
        "video_id": st.one_of(st.none(), st.text(max_size=3), json_values),
        "seed": st.one_of(st.none(), st.integers(-3, 2**65), json_values),
        "video": st.one_of(st.sampled_from(["clip.mp4", "../clip.mp4"]), json_values),
    }),
)


@fuzz_settings(150)
@given(json_requests)
def test_fuzz_request_from_json_gives_a_request_or_a_request_error(obj):
    try:
        request = request_from_json(obj, FILES, default_id=7)
    except RequestError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert isinstance(request, GroundingRequest) and isinstance(request.query, str)
    assert 0 < request.duration <= 1e7 and (request.seed is None or 0 <= request.seed < 2**64)
    result = ENGINE.ground([request])[0]
    strict_json(result)
    assert result.error is None or not result.error.startswith("internal error"), result.error


POOL = [GroundingRequest(np.random.default_rng(i).standard_normal((5 + 7 * i, D)).astype(np.float32),
                         "person opens the door" if i % 2 else "a person sits on chair", 20.0, id=i)
        for i in range(4)]
POOL += [GroundingRequest(PATHS["nan.npy"], "door", 3.0, id=4), None, GroundingRequest(POOL[0].features, 5, 3.0, id=6)]
POISON_ID = 7  # a request whose presence makes the engine raise, as a backend might
POOL.append(GroundingRequest(POOL[1].features, "door", 3.0, id=POISON_ID))


@pytest.fixture(scope="module")
def alone():
    return [ENGINE.ground([r])[0] for r in POOL]


class PoisonedEngine(GroundOnlyEngine):
    """The real engine, except that a batch holding the poison request raises."""

    def ground(self, batch):
        if any(getattr(r, "id", None) == POISON_ID for r in batch):
            raise RuntimeError("backend failure")
        return ENGINE.ground(batch)


@fuzz_settings(30)
@given(st.lists(st.tuples(st.integers(0, len(POOL) - 1), st.sampled_from(["keep", "keep", "cancel"])),
                min_size=1, max_size=30),
       st.integers(1, 8), st.integers(1, 12), st.floats(0, 5), st.integers(0, 60))
def test_fuzz_batcher_resolves_every_future(alone, ops, max_batch, max_queue, wait_ms, close_at):
    batcher = MicroBatcher(PoisonedEngine(), max_batch=max_batch, max_wait_ms=wait_ms, max_queue=max_queue)
    accepted = []
    for step, (index, action) in enumerate(ops):
        if step == close_at:
            threading.Thread(target=batcher.close).start()  # close at any moment, from another thread
        try:
            future = batcher.submit(POOL[index])
        except (QueueFullError, BatcherClosedError):
            continue
        if action == "cancel":
            future.cancel()
        accepted.append((index, future))
    batcher.close(timeout=60)
    assert not batcher._worker.is_alive()
    for index, future in accepted:
        try:
            result = future.result(timeout=1)
        except CancelledError:
            continue
        except RuntimeError as err:
            assert POOL[index] is not None and POOL[index].id == POISON_ID and "backend failure" in str(err)
            continue
        assert POOL[index] is None or POOL[index].id != POISON_ID
        assert same_outcome(result, alone[index])
