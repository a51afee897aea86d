"""engine/compiled_localizer.py vs reference/localizer.py (ConditionedPredictor + decode_span): shape
bucketing and padding on CPU, torch.compile + CUDA graphs on a GPU, `make_localizer`'s choice, and
the localizer timing bench (bench/localizer_timing.py)."""
from __future__ import annotations

import json

import pytest
import torch

from bench.localizer_timing import main as timing_main
from bench.localizer_timing import time_localizers
from engine.compile.compiled_localizer import CompiledLocalizer, bucket_shape, make_localizer, pad_inputs
from engine.compile.trt import TrtError
from reference.ops import relative_error
from reference.testing import random_model
from tests.helpers import small_config

MODEL = random_model(small_config(max_pos_len=256), seed=7, dtype=torch.float32)


def random_inputs(batch: int, length: int, seed: int, device: str = "cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    lengths[0] = length
    x = torch.randn(batch, length, MODEL.cfg.dim, generator=g).to(device, dtype)
    return x, (torch.arange(length)[None, :] < lengths[:, None]).to(device)


def assert_close_to_reference(model, localizer, x, mask, conv_mask, tolerance=1e-5, same_indices=True):
    with torch.no_grad():
        out, ref = localizer(x, mask, conv_mask), model.predictor(x, mask, conv_mask)
    assert out.start_logits.shape == ref.start_logits.shape and out.start_index.shape == ref.start_index.shape
    for name in ("start_logits", "end_logits"):
        assert relative_error(getattr(out, name)[mask], getattr(ref, name)[mask]) <= tolerance
    if same_indices:
        assert torch.equal(out.start_index, ref.start_index) and torch.equal(out.end_index, ref.end_index)


def test_bucket_shape_pads_batch_always_and_length_only_when_isolated():
    assert bucket_shape(1, 1, True, 256) == (1, 64)
    assert bucket_shape(3, 64, True, 256) == (4, 64)
    assert bucket_shape(5, 65, True, 256) == (8, 100)
    assert bucket_shape(1000, 101, True, 256) == (1024, 256)
    assert bucket_shape(5, 65, False, 256) == (8, 65)
    assert bucket_shape(2, 70, True, 80) == (2, 80)  # the model's own max_pos_len is the last bucket
    with pytest.raises(ValueError):
        bucket_shape(1, 257, True, 256)


def test_pad_inputs_zero_pads_features_and_masks_out_padding():
    x, mask = random_inputs(3, 5, seed=0)
    px, pmask, pconv = pad_inputs(x, mask, mask, 4, 8)
    assert px.shape == (4, 8, MODEL.cfg.dim) and pmask.shape == pconv.shape == (4, 8)
    assert torch.equal(px[:3, :5], x) and not px[3:].any() and not px[:, 5:].any()
    assert torch.equal(pmask[:3, :5], mask) and not pmask[3:].any() and not pmask[:, 5:].any()
    assert pad_inputs(x, mask, None, 4, 5)[2] is None
    assert pad_inputs(x, mask, None, 3, 5)[0] is x


@pytest.mark.parametrize("padding", ["batch", "isolated"])
def test_bucketed_localizer_equals_reference_on_cpu(padding):
    localizer = CompiledLocalizer(MODEL.predictor, torch_compile=False, cuda_graphs=False)
    for seed, (batch, length) in enumerate([(1, 1), (3, 17), (5, 64), (6, 65), (2, 101), (7, 256)]):
        x, mask = random_inputs(batch, length, seed)
        assert_close_to_reference(MODEL, localizer, x, mask, mask if padding == "isolated" else None)


def test_make_localizer_on_cpu_is_the_eager_predictor_and_tensorrt_is_refused():
    localizer, name = make_localizer(MODEL)
    assert (localizer, name) == (MODEL.predictor, "eager")
    with pytest.raises(TrtError, match="CUDA"):
        make_localizer(MODEL, prefer="tensorrt")
    with pytest.raises(ValueError, match="prefer"):
        make_localizer(MODEL, prefer="fastest")


def test_timing_bench_runs_on_cpu_and_reports_skips(tmp_path):
    rows = time_localizers(MODEL, shapes=((2, 16),), impls=("eager", "tensorrt"), warmup=1, iters=2)
    skipped = [r for r in rows if "skipped" in r]
    assert [r["impl"] for r in skipped] == ["tensorrt"]
    (row,) = [r for r in rows if "skipped" not in r]
    assert row["impl"] == "eager" and row["index_agreement"] == 1.0 and row["logits_rel_err"] == 0.0
    assert row["p50_ms"] > 0 and row["queries_per_s"] > 0
    out = tmp_path / "timing.json"
    assert timing_main(["--shapes", "1x8", "--impl", "eager", "--warmup", "0", "--iters", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["environment"]["torch"] == torch.__version__ and result["rows"][0]["batch"] == 1
    assert "tensorrt" in result["environment"]


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_compiled_cuda_graph_localizer_matches_reference(dtype, tolerance):
    model = random_model(small_config(max_pos_len=256), seed=7, dtype=dtype).cuda()
    localizer = CompiledLocalizer(model.predictor)
    shapes = [(3, 40, "isolated"), (4, 64, "isolated"), (3, 40, "isolated"), (2, 30, "batch"), (5, 200, "isolated")]
    for seed, (batch, length, padding) in enumerate(shapes):
        x, mask = random_inputs(batch, length, seed, "cuda", dtype)
        assert_close_to_reference(model, localizer, x, mask, mask if padding == "isolated" else None, tolerance,
                                  same_indices=dtype == torch.float32)
    assert len(localizer.graphs) == 3  # (4, 64) isolated, (2, 30) batch, (8, 256) isolated


@pytest.mark.cuda
@cuda
def test_make_localizer_on_cuda_picks_tensorrt_or_the_compiled_fallback(tmp_path):
    model = random_model(small_config(max_pos_len=100), seed=8, dtype=torch.float32).cuda()
    localizer, name = make_localizer(model, cache_dir=tmp_path, max_batch=8)
    assert name in ("tensorrt-fp32", "torch.compile+cuda-graph")
    x, mask = random_inputs(3, 70, seed=1, device="cuda")
    assert_close_to_reference(model, localizer, x, mask, mask, tolerance=1e-4)
