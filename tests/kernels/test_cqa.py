"""kernels.cqa.FusedCQA / FusedPoolConcat against their reference twins
reference.cqa.ContextQueryAttention / PoolConcat (float64)."""
from __future__ import annotations

import copy

import pytest
import torch

from kernels.cqa import FusedCQA, FusedPoolConcat
from reference.config import SeqPANConfig
from reference.cqa import ContextQueryAttention, PoolConcat
from reference.ops import relative_error
from reference.precision import PRECISIONS
from reference.testing import init_like_trained, ragged_mask

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def config(dim: int = 128) -> SeqPANConfig:
    return SeqPANConfig(num_words=4, num_chars=4, dim=dim, num_heads=dim // 16)


def inputs(v_lens: list[int], q_lens: list[int], dim: int, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(len(v_lens), max(v_lens), dim, generator=gen).to(DEVICE, dtype)
    q = torch.randn(len(q_lens), max(q_lens), dim, generator=gen).to(DEVICE, dtype)
    return v, q, ragged_mask(v_lens, device=DEVICE), ragged_mask(q_lens, device=DEVICE)


def check_cqa(v_lens: list[int], q_lens: list[int], precision: str = "fp32", dim: int = 128, seed: int = 0,
              **options) -> None:
    """Both blocks as the model uses them: q2v(v, q, ...) and v2q(q, v, ...)."""
    dtype, dot, _ = PRECISIONS[precision]
    cqa = init_like_trained(ContextQueryAttention(config(dim)), seed).to(DEVICE)
    fused, ref = FusedCQA(cqa, allow_tf32=dot == "tf32", **options), copy.deepcopy(cqa).double()
    v, q, v_mask, q_mask = inputs(v_lens, q_lens, dim, dtype, seed)
    with torch.no_grad():
        for c, k, c_mask, k_mask in ((v, q, v_mask, q_mask), (q, v, q_mask, v_mask)):
            out, score = fused(c, k, c_mask, k_mask)
            ref_out, ref_score = ref(c.double(), k.double(), c_mask, k_mask)
            assert out.dtype == score.dtype == dtype
            assert out.shape == c.shape and score.shape == (c.shape[0], c.shape[1], k.shape[1])
            for name, got, want in (("output", out, ref_out), ("similarity", score, ref_score)):
                err = relative_error(got, want)
                assert err <= PRECISIONS[precision].tolerance, f"{precision} {name}: relative error {err:.3g}"


@pytest.mark.parametrize("v_lens, q_lens, options", [
    ([70, 1, 33], [1, 9, 5], dict(block_rows=32, block_words=16)),  # T pre-computed, several word blocks
    ([70, 1, 33], [1, 9, 5], dict(block_rows=32, block_words=16, t="inline", stage=True)),  # + staged matmuls
    ([1], [1], {}),
    ([64, 17, 2], [5, 12, 1], {}),
    ([1024, 5], [128, 3], dict(block_rows=256, block_words=256)),
], ids=["pre-t", "inline-t", "length-1", "charades", "longest"])
def test_cqa_fp32_matches_reference(v_lens, q_lens, options):
    check_cqa(v_lens, q_lens, **options)


@pytest.mark.parametrize("precision, stage", [("tf32", False), ("bf16", False), ("fp16", True)])
def test_cqa_low_precision_within_tolerance(precision, stage):
    check_cqa([40, 1, 23], [1, 9, 5], precision, seed=1, block_rows=32, block_words=16, stage=stage)


def test_cqa_small_config():
    check_cqa([19, 4], [3, 7], dim=32, seed=2)


def check_pool_concat(v_lens: list[int], q_lens: list[int], precision: str = "fp32", seed: int = 0,
                      **options) -> None:
    dtype, dot, _ = PRECISIONS[precision]
    pool = init_like_trained(PoolConcat(config()), seed).to(DEVICE)
    v, q, _, q_mask = inputs(v_lens, q_lens, 128, dtype, seed)
    with torch.no_grad():
        out = FusedPoolConcat(pool, allow_tf32=dot == "tf32", **options)(v, q, q_mask)
        ref = copy.deepcopy(pool).double()(v.double(), q.double(), q_mask)
    assert out.dtype == dtype and out.shape == v.shape
    err = relative_error(out, ref)
    assert err <= PRECISIONS[precision].tolerance, f"{precision}: relative error {err:.3g}"


@pytest.mark.parametrize("v_lens, q_lens, options", [
    ([70, 1, 33], [1, 9, 40], dict(block_rows=32, block_words=16, stage=True)),
    ([1], [1], {}),
    ([64, 17], [12, 128], {}),
])
def test_pool_concat_fp32_matches_reference(v_lens, q_lens, options):
    check_pool_concat(v_lens, q_lens, **options)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_pool_concat_low_precision(precision):
    check_pool_concat([40, 1, 23], [1, 9, 5], precision, seed=1)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_benchmark_shape(precision):
    lens = torch.randint(1, 65, (256,), generator=torch.Generator().manual_seed(0)).tolist()
    v_lens, q_lens = [64, *lens[1:]], [12, *[1 + n % 12 for n in lens[1:]]]
    check_cqa(v_lens, q_lens, precision)
    check_pool_concat(v_lens, q_lens, precision)
