"""engine/compile/openvino_backend.py (the CPU fast path) against the goldens and the reference: both
padding modes, the engine on ragged batches, the compiled-model cache (keys, stale and corrupt
entries), bf16, and the fallback to the reference when OpenVINO does not import."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys

import numpy as np
import pytest
import torch

from engine import GroundingEngine, GroundingRequest
from engine.backends import build_backend
from engine.devices import openvino_imports
from engine.errors import BackendError
from engine.parity import run_parity
from engine.stages import stage_inputs
from reference.ops import relative_error
from reference.testing import random_model
from tests.helpers import random_batch, small_config

ob = pytest.importorskip("engine.compile.openvino_backend")
pytest.importorskip("openvino", reason="the CPU fast path runs OpenVINO (pip install openvino)")

CFG = small_config(max_pos_len=32)
MODEL = random_model(CFG, seed=5)
WORDS = ["person", "opens", "the", "door", "a", "closes", "window", "sits", "on", "chair", "walks", "into", "room"]
WORD_DICT = {"<PAD>": 0, "<UNK>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
CHAR_DICT = {"<PAD>": 0, "<UNK>": 1, **{c: i + 2 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}}
SHAPE = (2, 16, 8)  # the cross stage's (queries, clips, words)


@pytest.mark.parametrize("padding", ["batch", "isolated"])
def test_reproduces_golden(golden_path, padding):
    result = run_parity(golden_path, backend="openvino", padding=padding)
    assert result["indices_equal"], (result["start_index"], result["expected_start_index"])
    assert result["logits_rel_err"] <= 1e-4


@pytest.mark.parametrize("padding", ["batch", "isolated"])
def test_forward_equals_reference_on_ragged_batches(padding):
    backend = build_backend("openvino", MODEL)
    for seed, (video_lens, query_lens) in enumerate([([1], [1]), ([32, 32], [9, 9]), ([32, 1, 17, 5], [1, 9, 4, 2])]):
        batch = random_batch(CFG, video_lens, query_lens, seed=seed, dtype=torch.float32)
        noise = torch.randn(len(video_lens), max(video_lens), 4, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            ref = MODEL(**batch, padding=padding, gumbel_noise=noise)
            out = backend(**batch, padding=padding, gumbel_noise=noise)
        mask = ref.video_mask
        for name in ("start_logits", "end_logits", "match_logits"):
            assert relative_error(getattr(out, name), getattr(ref, name), mask) <= 1e-4, (name, video_lens)
        assert torch.equal(out.start_index, ref.start_index) and torch.equal(out.end_index, ref.end_index)
        assert relative_error(out.score, ref.score) <= 1e-4


def ragged_requests(seed: int) -> list[GroundingRequest]:
    """Videos of 1 clip, full length, over-long (down-sampled) and ragged; queries of 1 word to long
    ones; some videos shared by several queries."""
    rng = np.random.default_rng(seed)
    videos = [rng.standard_normal((n, CFG.visual_dim)).astype(np.float32) for n in (1, CFG.max_pos_len, 70, 5, 23)]
    requests = []
    for i in range(23):
        words = " ".join(rng.choice(WORDS + ["zebra"], size=int(rng.choice([1, 3, 9, 14, 40]))))  # 40 > max_pos_len
        v = int(rng.integers(len(videos)))
        requests.append(GroundingRequest(videos[v], words, duration=30.0, video_id=f"v{v}", id=i))
    return requests


def test_engine_on_openvino_equals_reference():
    requests = ragged_requests(seed=0)
    fast = GroundingEngine(MODEL, WORD_DICT, CHAR_DICT, device="cpu", backend="auto", max_batch=16)
    slow = GroundingEngine(MODEL, WORD_DICT, CHAR_DICT, device="cpu", backend="reference", max_batch=16)
    assert fast.backend_name == "openvino" and fast.precision == "fp32"
    for f, s in zip(fast.ground(requests), slow.ground(requests)):
        assert f.error is None and (f.start_index, f.end_index) == (s.start_index, s.end_index)
        assert f.score == pytest.approx(s.score, rel=1e-4)
    alone = [fast.ground([r])[0] for r in requests[:6]]  # other shapes: one query, one video
    for a, s in zip(alone, slow.ground(requests[:6])):
        assert (a.start_index, a.end_index) == (s.start_index, s.end_index)


def test_bf16_is_as_close_as_torch_in_bf16():
    """OpenVINO's bf16 keeps activations in bf16 between ops, as a bf16 model does: on this random
    model both are about 2% off fp32 (DESIGN's bf16 tolerance, 2e-2, is met by neither every time):
    it must be within twice torch's own bf16 error, and really not fp32."""
    batch = random_batch(CFG, [32, 9, 20], [5, 2, 8], seed=4, dtype=torch.float32)
    bf16 = build_backend("openvino", MODEL, precision="bf16")
    with torch.no_grad():
        ref = MODEL(**batch, padding="isolated")
        out = bf16(**batch, padding="isolated")
        torch_bf16 = random_model(CFG, seed=5, dtype=torch.bfloat16)(**{**batch, "video": batch["video"].bfloat16()},
                                                                      padding="isolated")
    mask = ref.video_mask
    error = max(relative_error(out.start_logits, ref.start_logits, mask), relative_error(out.end_logits, ref.end_logits, mask))
    torch_error = max(relative_error(torch_bf16.start_logits, ref.start_logits, mask),
                      relative_error(torch_bf16.end_logits, ref.end_logits, mask))
    assert error <= 2 * torch_error
    if "BF16" in ob.core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert error > 1e-3  # it ran in bf16


def test_cache_key_names_everything_a_compiled_model_depends_on():
    key = ob.CompiledKey("ab" * 32, "cross", "isolated", SHAPE, "f32", "2026.4.1", "AMD EPYC [BF16 FP32]")
    changed = {"weights_hash": "cd" * 32, "stage": "query", "padding": "batch", "shape": (4, 16, 8),
               "precision": "bf16", "runtime": "2026.5.0", "cpu": "Intel Xeon [AMX_BF16 BF16 FP32]",
               "graph_version": "0"}
    digests = {dataclasses.replace(key, **{field: value}).digest() for field, value in changed.items()}
    assert len(digests | {key.digest()}) == len(changed) + 1
    assert key.digest() == ob.CompiledKey(**dataclasses.asdict(key)).digest()  # stable across instances


def fresh_stage(tmp_path, max_bytes=None) -> ob.StageModels:
    """The cross stage's models over a disk cache in `tmp_path`, nothing compiled in this process's memory."""
    ob._compiled.clear()
    return ob.StageModels(MODEL, "cross", "isolated", "f32", ob.EngineCache(tmp_path, max_bytes), 2)


def run_shape(stage: ob.StageModels, shape=SHAPE) -> list[np.ndarray]:
    """The cross stage once at `shape` (queries, clips, words) on random encodings."""
    inputs = [t.numpy() for t in stage_inputs(CFG, "cross", shape)]
    inputs[0] = np.random.default_rng(9).standard_normal(inputs[0].shape).astype(np.float32)
    inputs[2] = np.random.default_rng(10).standard_normal(inputs[2].shape).astype(np.float32)
    return stage(shape, *inputs)


def test_disk_cache_serves_a_later_process_and_rebuilds_stale_or_corrupt_entries(tmp_path):
    stage = fresh_stage(tmp_path)
    expected = run_shape(stage)
    assert stage.status[SHAPE] == "built (not cached)"
    again = fresh_stage(tmp_path)
    out = run_shape(again)
    assert again.status[SHAPE] == "cached" and all(np.array_equal(a, b) for a, b in zip(out, expected))
    blob_path, sidecar_path = again.cache.paths(again.key(SHAPE))

    blob_path.write_bytes(blob_path.read_bytes()[:-10] + b"0123456789")  # corrupt
    corrupt = fresh_stage(tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(run_shape(corrupt), expected))
    assert corrupt.status[SHAPE].startswith("built (corrupt")

    sidecar = json.loads(sidecar_path.read_text())
    sidecar["key"]["runtime"] = "0.0"  # an entry written for another key under this name
    sidecar_path.write_text(json.dumps(sidecar))
    stale = fresh_stage(tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(run_shape(stale), expected))
    assert stale.status[SHAPE].startswith("built (stale")

    stale.cache.store(stale.key(SHAPE), b"not an OpenVINO model")  # a consistent entry that will not import
    unreadable = fresh_stage(tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(run_shape(unreadable), expected))
    assert unreadable.status[SHAPE].startswith("built (cached model did not import")


def test_disk_cache_is_bounded_in_bytes_dropping_the_least_recently_used(tmp_path):
    """Three shapes stored under a bound that holds two entries: the one used least recently goes; a
    hit marks an entry used."""
    stage = fresh_stage(tmp_path)
    shapes = [(1, 16, 8), (2, 16, 8), (1, 32, 8)]
    run_shape(stage, shapes[0])
    size = stage.cache.paths(stage.key(shapes[0]))[0].stat().st_size
    bounded = fresh_stage(tmp_path, max_bytes=int(2.5 * size))
    run_shape(bounded, shapes[1])
    os.utime(bounded.cache.paths(bounded.key(shapes[1]))[0], ns=(1, 1))  # shape 1: used long ago
    run_shape(fresh_stage(tmp_path, max_bytes=int(2.5 * size)), shapes[0])  # a hit: shape 0 used now
    run_shape(fresh_stage(tmp_path, max_bytes=int(2.5 * size)), shapes[2])
    kept = {p.stem for p in tmp_path.glob("*.engine")}
    assert kept == {stage.key(shapes[0]).digest(), stage.key(shapes[2]).digest()}
    assert {p.stem for p in tmp_path.glob("*.json")} == kept


def test_warm_up_compiles_the_whole_plan_and_nothing_runs_a_compile_after_it(tmp_path):
    """After `warm_up`, a varied random load (1 to max_batch requests, 1 clip to past max_pos_len, 1
    to 40 words, words up to the char limit) loads no model: every shape it needs is in the plan."""
    ob._compiled.clear()
    engine = GroundingEngine(MODEL, WORD_DICT, CHAR_DICT, device="cpu", max_batch=8,
                             backend_options={"cache_dir": tmp_path})
    engine.warm_up()
    plan = engine.plan
    assert engine.step.loads == len(plan) == len(list(tmp_path.glob("*.engine")))
    statuses = {name: engine.model.stage(name, "isolated").status for name in ("video", "query", "cross")}
    assert set(statuses["video"]) == set(plan.video_shapes()) and set(statuses["query"]) == set(plan.query_shapes())
    assert set(statuses["cross"]) == set(plan.cross_shapes())
    rng = np.random.default_rng(3)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    for _ in range(6):
        requests = []
        for i in range(int(rng.integers(1, 2 * engine.max_batch))):
            words = [WORDS[k] for k in rng.integers(len(WORDS), size=int(rng.integers(1, 41)))]
            words[0] = "".join(rng.choice(letters, size=int(rng.integers(1, engine.limits.max_word_chars + 1))))
            clips = int(rng.choice([1, 2, 15, 16, 17, 31, 32, 33, 70]))
            requests.append(GroundingRequest(rng.standard_normal((clips, CFG.visual_dim)).astype(np.float32),
                                             " ".join(words), 30.0, id=i))
        assert all(r.error is None for r in engine.ground(requests))
    assert engine.step.loads == len(plan)


def test_missing_openvino_falls_back_to_the_reference_saying_so_once(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    openvino_imports.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            engines = [GroundingEngine(MODEL, WORD_DICT, CHAR_DICT, device="cpu") for _ in range(2)]
        assert [e.backend_name for e in engines] == ["reference", "reference"]
        lines = [r.getMessage() for r in caplog.records if "OpenVINO" in r.getMessage()]
        assert len(lines) == 1 and "\n" not in lines[0] and "reference" in lines[0]
        result = engines[0].ground(ragged_requests(seed=1)[:3])
        assert all(r.error is None for r in result)
        with pytest.raises(BackendError, match="openvino"):
            build_backend("openvino", MODEL)
    finally:
        openvino_imports.cache_clear()
