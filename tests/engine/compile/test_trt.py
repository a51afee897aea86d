"""engine/compile/trt.py and disk_cache.py: profiles, profile selection, engine-cache keys and stale/corrupt entries (plain
Python, run everywhere); `seqpan build-trt` without TensorRT; and, where TensorRT and a GPU exist,
the engine against reference/localizer.py."""
from __future__ import annotations

import dataclasses
import importlib.util
import json

import pytest
import torch

from engine.compile.disk_cache import CacheMiss, EngineCache
from engine.compile.trt import (
    EngineKey,
    Profile,
    ProfileError,
    length_buckets,
    length_profiles,
    select_profile,
)
from engine.io.checkpoint import save_checkpoint
from reference.ops import relative_error
from reference.testing import random_model
from tests.helpers import run_cli, small_config

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
KEY = EngineKey("ab" * 32, "fp16", "NVIDIA H100 80GB HBM3", "10.7.0", length_profiles(256, 512))


def test_length_profiles_cover_buckets_up_to_max_pos_len():
    assert length_buckets(64) == (64,) and length_buckets(100) == (64, 100)
    assert length_buckets(300) == (64, 100, 256, 300)
    profiles = length_profiles(256, max_batch=512, opt_batch=32)
    assert [(p.min_len, p.max_len) for p in profiles] == [(1, 64), (65, 100), (101, 256)]
    assert all((p.min_batch, p.opt_batch, p.max_batch) == (1, 32, 512) for p in profiles)
    assert length_profiles(64, max_batch=8)[0] == Profile(1, 8, 8, 1, 64)  # opt clamped to max
    with pytest.raises(ValueError):
        length_profiles(64, max_batch=0)


def test_profile_input_shapes_are_min_opt_max_per_input():
    shapes = Profile(1, 32, 512, 65, 100).input_shapes(dim=128)
    assert shapes["x"] == ((1, 65, 128), (32, 100, 128), (512, 100, 128))
    assert shapes["mask"] == shapes["conv_mask"] == ((1, 65), (32, 100), (512, 100))


def test_select_profile_picks_the_bucket_and_names_uncovered_shapes():
    profiles = length_profiles(256, max_batch=512)
    assert [select_profile(profiles, b, n) for b, n in [(1, 1), (512, 64), (3, 65), (7, 100), (1, 101), (2, 256)]] \
        == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ProfileError, match=r"batch 513 x length 10 .*--max-batch 513"):
        select_profile(profiles, 513, 10)
    with pytest.raises(ProfileError, match="at most 256 clips"):
        select_profile(profiles, 1, 257)


def test_engine_key_digest_changes_with_every_field():
    changed = [dataclasses.replace(KEY, **{f: v}) for f, v in [
        ("weights_hash", "cd" * 32), ("precision", "bf16"), ("gpu", "NVIDIA H200"), ("tensorrt", "10.8.0"),
        ("profiles", length_profiles(256, 1024)), ("graph_version", "2")]]
    digests = {KEY.digest(), *(k.digest() for k in changed)}
    assert len(digests) == 1 + len(changed)
    assert dataclasses.replace(KEY).digest() == KEY.digest()


class CountingBuilder:
    def __init__(self, blob: bytes = b"engine-bytes"):
        self.blob, self.calls = blob, 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.blob


def test_cache_builds_once_then_serves_the_stored_engine(tmp_path):
    cache, build = EngineCache(tmp_path), CountingBuilder()
    assert cache.get_or_build(KEY, build) == (b"engine-bytes", "built (not cached)")
    assert cache.get_or_build(KEY, build) == (b"engine-bytes", "cached")
    assert build.calls == 1
    engine, sidecar = cache.paths(KEY)
    assert json.loads(sidecar.read_text())["key"] == KEY.as_json()
    other = dataclasses.replace(KEY, gpu="NVIDIA H200")
    assert cache.get_or_build(other, build)[1] == "built (not cached)"  # another GPU: its own entry
    assert build.calls == 2 and engine.is_file()


@pytest.mark.parametrize("damage, reason", [
    (lambda engine, sidecar: engine.write_bytes(b"engine-bytez"), "corrupt: engine bytes"),
    (lambda engine, sidecar: engine.write_bytes(b"engine-by"), "corrupt: engine bytes"),
    (lambda engine, sidecar: sidecar.write_text("{not json"), "corrupt: unreadable"),
    (lambda engine, sidecar: sidecar.write_text("[1, 2]"), "corrupt: the sidecar"),
    (lambda engine, sidecar: sidecar.write_text(
        sidecar.read_text().replace("NVIDIA H100 80GB HBM3", "NVIDIA A100")), "stale: built for another key"),
    (lambda engine, sidecar: sidecar.unlink(), "not cached"),
])
def test_stale_or_corrupt_entries_are_detected_discarded_and_rebuilt(tmp_path, damage, reason):
    cache, build = EngineCache(tmp_path), CountingBuilder()
    cache.store(KEY, b"engine-bytes")
    damage(*cache.paths(KEY))
    with pytest.raises(CacheMiss, match=reason):
        cache.load(KEY)
    assert not any(path.exists() for path in cache.paths(KEY))  # discarded, never used
    cache.store(KEY, b"engine-bytes")
    damage(*cache.paths(KEY))
    blob, status = cache.get_or_build(KEY, build)
    assert blob == b"engine-bytes" and status.startswith(f"built ({reason}") and build.calls == 1
    assert cache.load(KEY) == b"engine-bytes"


@pytest.mark.skipif(HAS_TENSORRT, reason="checks the error shown where TensorRT is not installed")
def test_build_trt_without_tensorrt_fails_in_one_line_and_writes_nothing(tmp_path):
    ckpt = tmp_path / "model.safetensors"
    save_checkpoint(ckpt, random_model(small_config(), dtype=torch.float32), {}, {})
    cache = tmp_path / "cache"
    result = run_cli("build-trt", str(ckpt), "--cache-dir", str(cache), "--precision", "fp16")
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.startswith("seqpan build-trt: error: TensorRT is not available")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not cache.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


@pytest.mark.cuda
@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-4), ("bf16", 2e-2)])
def test_tensorrt_engine_matches_reference_and_is_cached(tmp_path, precision, tolerance):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (it cannot be on our CI or GPU machines)")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")
    from engine.compile.trt import engine_for, trt_localizer
    from reference.precision import PRECISIONS

    dtype = PRECISIONS[precision].dtype
    model = random_model(small_config(max_pos_len=100), seed=1, dtype=dtype).cuda()
    localizer = trt_localizer(model, cache_dir=tmp_path, max_batch=16)
    assert engine_for(model, precision, tmp_path, max_batch=16).status == "cached"
    g = torch.Generator().manual_seed(0)
    for batch, length, padding in [(1, 1, "isolated"), (16, 64, "batch"), (5, 65, "isolated"), (3, 100, "batch")]:
        lengths = torch.randint(1, length + 1, (batch,), generator=g)
        lengths[0] = length
        mask = (torch.arange(length)[None, :] < lengths[:, None]).cuda()
        x = torch.randn(batch, length, model.cfg.dim, generator=g).to("cuda", dtype)
        conv_mask = mask if padding == "isolated" else None
        with torch.no_grad():
            out, ref = localizer(x, mask, conv_mask), model.predictor(x, mask, conv_mask)
        assert relative_error(out.start_logits[mask], ref.start_logits[mask]) <= tolerance
        assert relative_error(out.end_logits[mask], ref.end_logits[mask]) <= tolerance
        if precision == "fp32":
            assert torch.equal(out.start_index, ref.start_index) and torch.equal(out.end_index, ref.end_index)
    with pytest.raises(ProfileError):
        localizer(torch.zeros(17, 8, model.cfg.dim, device="cuda", dtype=dtype),
                  torch.ones(17, 8, dtype=torch.bool, device="cuda"), None)
