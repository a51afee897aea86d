"""I3D compiled by OpenVINO: its features equal the eager model's (f32), and its disk cache is keyed by
everything a compiled model depends on and never serves a stale or corrupt entry."""
import dataclasses
import json

import numpy as np
import pytest
import torch

pytest.importorskip("openvino", reason="the compiled I3D needs OpenVINO")

from engine.compile.openvino_backend import core
from engine.video.compiled_i3d import CompiledWindowRunner, I3dKey, i3d_hash
from engine.video.eager_i3d import WindowRunner
from engine.video.weights import random_i3d


def relative_error(got, expected):
    return np.linalg.norm(got - expected) / np.linalg.norm(expected)


@pytest.fixture(scope="module")
def model():
    return random_i3d(0)


@pytest.mark.parametrize("windows,frames", [(2, 9), (1, 17)])
def test_compiled_features_equal_eager_ones(model, tmp_path, windows, frames):
    crops = np.random.default_rng(frames + windows).integers(0, 256, (windows, frames, 224, 224, 3), dtype=np.uint8)
    expected = WindowRunner(model)(crops)
    got = CompiledWindowRunner(model, "fp32", cache_dir=tmp_path)(crops)
    assert got.dtype == np.float32 and got.shape == expected.shape == (windows, -(-frames // 8) - 1, 1024)
    assert relative_error(got, expected) < 1e-5
    # each window's own features (He-scaled weights keep windows of different pixels apart)
    assert all(relative_error(got[i], expected[i]) < 1e-5 for i in range(windows))
    if windows > 1:
        assert relative_error(got[0], got[1]) > 1e-3


def test_every_key_field_changes_the_digest():
    key = I3dKey("hash", (8, 24), "f32", "2026.4", "AMD EPYC [FP32 BF16]")
    changed = {"weights_hash": "other", "shape": (8, 16), "precision": "bf16", "runtime": "2026.5",
               "cpu": "Intel Xeon [FP32]", "graph_version": "0"}
    assert set(changed) == {f.name for f in dataclasses.fields(I3dKey)}
    digests = {key.digest()} | {dataclasses.replace(key, **{name: value}).digest() for name, value in changed.items()}
    assert len(digests) == 1 + len(changed)
    assert dataclasses.replace(key, shape=(24, 8)).digest() != key.digest()  # windows and frames differ


def test_weights_hash_changes_with_any_weight(model):
    before = i3d_hash(model)
    other = random_i3d(0)
    assert i3d_hash(other) == before  # the same weights, another object
    with torch.no_grad():
        other.Mixed_5c.b3b.bn.running_var[7] += 1e-6
    assert i3d_hash(other) != before


def test_disk_cache_is_reused_and_stale_or_corrupt_entries_are_rebuilt(model, tmp_path):
    crops = np.random.default_rng(1).integers(0, 256, (1, 9, 224, 224, 3), dtype=np.uint8)
    first = CompiledWindowRunner(model, "fp32", cache_dir=tmp_path)
    expected = first(crops)
    assert first.status[(1, 9)] == "built (not cached)"
    again = CompiledWindowRunner(model, "fp32", cache_dir=tmp_path)
    assert np.array_equal(again(crops), expected) and again.status[(1, 9)] == "cached"

    engine_path, sidecar_path = again.cache.paths(again.key((1, 9)))
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["key"]["runtime"] = "an older OpenVINO"
    sidecar_path.write_text(json.dumps(sidecar))
    stale = CompiledWindowRunner(model, "fp32", cache_dir=tmp_path)
    assert np.array_equal(stale(crops), expected) and stale.status[(1, 9)].startswith("built (stale")

    blob = bytearray(engine_path.read_bytes())
    blob[len(blob) // 2] ^= 1
    engine_path.write_bytes(bytes(blob))
    corrupt = CompiledWindowRunner(model, "fp32", cache_dir=tmp_path)
    assert np.array_equal(corrupt(crops), expected) and corrupt.status[(1, 9)].startswith("built (corrupt")

    other_weights = random_i3d(1)
    assert CompiledWindowRunner(other_weights, "fp32", cache_dir=tmp_path).key((1, 9)) != again.key((1, 9))
    assert len(list(tmp_path.glob("*.engine"))) == 1  # each rebuild replaced the bad entry


def test_the_cpu_runs_the_compiled_i3d_unless_told_eager(model, tmp_path):
    from engine.video.extract import make_runner

    default = make_runner(model, "cpu", cache_dir=tmp_path)
    assert isinstance(default, CompiledWindowRunner) and default.precision == "f32"
    assert isinstance(make_runner(model, "cpu", runtime="eager"), WindowRunner)
    has_bf16 = "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    bf16 = make_runner(model, "cpu", "bf16", cache_dir=tmp_path)
    assert bf16.config["INFERENCE_PRECISION_HINT"] == ("bf16" if has_bf16 else "f32")  # f32 without bf16 units
    with pytest.raises(ValueError, match="unknown I3D runtime 'onnx'"):
        make_runner(model, "cpu", runtime="onnx")
