"""engine/compile/onnx_export.py and onnx_backend.py vs reference/localizer.py (ConditionedPredictor + decode_span): the
ONNX graph under onnxruntime, the `onnx` backend on every golden, and `seqpan export-onnx`."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from engine.backends import BackendError, build_backend
from engine.compile.onnx_backend import OrtLocalizer
from engine.compile.onnx_export import (
    GRAPH_VERSION,
    META_DTYPE,
    META_GRAPH,
    META_WEIGHTS,
    OPSET,
    LocalizerOnnxError,
    cummax_translation,
    export_localizer,
    localizer_onnx,
    onnx_metadata,
    read_localizer_onnx,
)
from engine.io.checkpoint import load_checkpoint, save_checkpoint, weights_hash
from engine.io.golden import golden_model, load_golden
from reference.ops import relative_error
from reference.testing import random_model
from tests.helpers import run_cli, small_config

pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript (pip install 'seqpan[onnx]')")
onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx (pip install 'seqpan[onnx]')")
pytest.importorskip("onnxruntime", reason="the ONNX checks run onnxruntime (pip install 'seqpan[onnx]')")

SMALL = random_model(small_config(max_pos_len=256), seed=3, dtype=torch.float32)


def random_inputs(dim: int, batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [batch, length, dim] and a mask whose first sample is `length` long, the others random."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    lengths[0] = length
    return torch.randn(batch, length, dim, generator=g), torch.arange(length)[None, :] < lengths[:, None]


def assert_matches_reference(model, localizer, batch: int, length: int, padding: str, seed: int) -> None:
    x, mask = random_inputs(model.cfg.dim, batch, length, seed)
    conv_mask = mask if padding == "isolated" else None
    with torch.no_grad():
        ref = model.predictor(x, mask, conv_mask)
        out = localizer(x, mask, conv_mask)
    for name in ("start_logits", "end_logits"):
        assert relative_error(getattr(out, name)[mask], getattr(ref, name)[mask]) <= 1e-4, (name, batch, length)
    assert torch.equal(out.start_index, ref.start_index) and torch.equal(out.end_index, ref.end_index)
    assert relative_error(out.score, ref.score) <= 1e-4


@pytest.fixture(scope="module")
def small_ort() -> OrtLocalizer:
    return OrtLocalizer(localizer_onnx(SMALL))


@pytest.mark.parametrize("padding", ["batch", "isolated"])
def test_onnx_matches_reference_for_lengths_1_to_256(small_ort, padding):
    rng = np.random.default_rng(0)
    for seed, length in enumerate((1, 2, 7, 63, 64, 65, 100, 101, 255, 256)):
        assert_matches_reference(SMALL, small_ort, int(rng.integers(1, 7)), length, padding, seed)


@pytest.mark.parametrize("padding", ["batch", "isolated"])
def test_onnx_matches_real_size_golden_model(golden_path, padding):
    model = golden_model(load_golden(golden_path))
    localizer = OrtLocalizer(localizer_onnx(model))
    for seed, (batch, length) in enumerate([(1, 1), (3, 17), (5, model.cfg.max_pos_len)]):
        assert_matches_reference(model, localizer, batch, length, padding, seed)


@pytest.mark.parametrize("padding", ["batch", "isolated"])
def test_parity_cli_onnx_backend_reproduces_golden(golden_path, padding):
    result = run_cli("parity", "--backend", "onnx", "--golden", str(golden_path), "--padding", padding, "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["indices_equal"] and out["logits_rel_err"] <= 1e-4


def test_cummax_lowering_matches_torch_on_ties_and_nan():
    nan = float("nan")
    x = torch.tensor([[[1.0, 1, 0], [1, nan, 2], [2, 2, 1], [0, 5, 5], [3, nan, 5]]])
    cummax = cummax_translation(8)
    for values in (x, x.flip(1), torch.randint(0, 3, (2, 8, 3)).float()):
        for dim in (0, 1, -1):
            want = torch.cummax(values, dim)
            got_values, got_indices = cummax(values.numpy(), dim)
            np.testing.assert_array_equal(np.asarray(got_values.value), want.values.numpy())
            np.testing.assert_array_equal(np.asarray(got_indices.value), want.indices.numpy())


def test_export_file_has_dynamic_axes_opset_and_weights_hash(tmp_path):
    path = export_localizer(SMALL, tmp_path / "loc.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == OPSET >= 17
    meta = onnx_metadata(proto)
    assert meta[META_WEIGHTS] == weights_hash(SMALL) and meta[META_GRAPH] == GRAPH_VERSION
    assert meta[META_DTYPE] == "float32"
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert dims["x"][:2] == dims["mask"] == dims["conv_mask"] and all(isinstance(d, str) for d in dims["mask"])
    assert [p.name for p in tmp_path.iterdir()] == ["loc.onnx"]  # written atomically: no leftovers
    assert read_localizer_onnx(path, SMALL).graph.input[0].name == "x"


def test_read_refuses_other_weights_and_non_exports(tmp_path):
    path = export_localizer(SMALL, tmp_path / "loc.onnx")
    other = random_model(small_config(max_pos_len=256), seed=4, dtype=torch.float32)
    with pytest.raises(LocalizerOnnxError, match="exported from other weights"):
        read_localizer_onnx(path, other)
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf \xff\xfe")
    with pytest.raises(LocalizerOnnxError, match="not a readable ONNX file"):
        read_localizer_onnx(tmp_path / "junk.onnx", SMALL)
    with pytest.raises(LocalizerOnnxError, match="not found"):
        read_localizer_onnx(tmp_path / "missing.onnx", SMALL)


def test_onnx_backend_refuses_non_float32_models():
    with pytest.raises(BackendError, match="float32 only"):
        build_backend("onnx", copy.deepcopy(SMALL).double())


def test_export_onnx_cli_writes_hashed_file_and_build_refuses_it_for_another_checkpoint(tmp_path):
    ckpt, other_ckpt = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_checkpoint(ckpt, SMALL, {}, {})
    other = random_model(small_config(max_pos_len=256), seed=5, dtype=torch.float32)
    save_checkpoint(other_ckpt, other, {}, {})
    out = tmp_path / "loc.onnx"
    result = run_cli("export-onnx", str(ckpt), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert onnx_metadata(onnx.load(str(out)))[META_WEIGHTS] == weights_hash(load_checkpoint(ckpt).model)

    cache = tmp_path / "cache"
    refused = run_cli("build-trt", str(other_ckpt), "--onnx", str(out), "--cache-dir", str(cache))
    assert refused.returncode == 2 and not cache.exists()
    assert "exported from other weights" in refused.stderr and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_export_onnx_that_fails_part_way_writes_nothing(tmp_path, monkeypatch):
    """The disk fills while the ONNX file is written: one-line error, exit 2, and neither the file,
    half of it, nor a temporary file is left (an older export stays whole)."""
    ckpt = save_checkpoint(tmp_path / "a.safetensors", SMALL, {}, {})
    folder = tmp_path / "out"
    folder.mkdir()

    def save_half_then_fail(proto, path):
        with open(path, "wb") as f:
            f.write(proto.SerializeToString()[:1000])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save", save_half_then_fail)
    result = run_cli("export-onnx", str(ckpt), "--out", str(folder / "loc.onnx"))
    assert result.returncode == 2 and "No space left on device" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert list(folder.iterdir()) == []
    (folder / "old.onnx").write_bytes(b"an older export")
    assert run_cli("export-onnx", str(ckpt), "--out", str(folder / "old.onnx")).returncode == 2
    assert [p.name for p in folder.iterdir()] == ["old.onnx"] and (folder / "old.onnx").read_bytes() == b"an older export"
