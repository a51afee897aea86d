"""kernels.cqa.FusedCQA / FusedPoolConcat against their reference twins
reference.cqa.ContextQueryAttention / PoolConcat (float64), sample by sample."""
from __future__ import annotations

import copy

import pytest
import torch

from kernels.cqa import FusedCQA, FusedPoolConcat, cqa, pack_cqa, pack_pool_concat, pool_concat
from kernels.settings import calculate_settings
from reference.config import SeqPANConfig
from reference.cqa import ContextQueryAttention, PoolConcat
from reference.precision import PRECISIONS
from reference.testing import init_like_trained, random_lengths, ragged_mask
from tests.helpers import assert_samples_close

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
    dtype, dot, tolerance = PRECISIONS[precision]
    cqa = init_like_trained(ContextQueryAttention(config(dim)), seed).to(DEVICE)
    fused, ref = FusedCQA(cqa, allow_tf32=dot == "tf32", **options), copy.deepcopy(cqa).double()
    v, q, v_mask, q_mask = inputs(v_lens, q_lens, dim, dtype, seed)
    with torch.no_grad():
        for c, k, c_mask, k_mask in ((v, q, v_mask, q_mask), (q, v, q_mask, v_mask)):
            out, score = fused(c, k, c_mask, k_mask)
            ref_out, ref_score = ref(c.double(), k.double(), c_mask, k_mask)
            assert out.dtype == score.dtype == dtype
            assert out.shape == c.shape and score.shape == (c.shape[0], c.shape[1], k.shape[1])
            assert_samples_close(out, ref_out, tolerance, c_mask, f"{precision} output")
            assert_samples_close(score, ref_score, tolerance, c_mask, f"{precision} similarity")


@pytest.mark.parametrize("v_lens, q_lens, options", [
    ([70, 1, 33], [1, 9, 5], dict(block_rows=32, block_words=16)),  # T pre-computed, several word blocks
    ([70, 1, 33], [1, 9, 5], dict(block_rows=32, block_words=16, t="inline")),  # T computed per word block
    ([1], [1], {}),
    ([64, 17, 2], [5, 12, 1], {}),
    ([1024, 5], [128, 3], dict(block_rows=256, block_words=256)),
], ids=["pre-t", "inline-t", "length-1", "charades", "longest"])
def test_cqa_fp32_matches_reference(v_lens, q_lens, options):
    check_cqa(v_lens, q_lens, **options)


def random_case(seed: int) -> tuple[list[int], list[int], dict]:
    """Random batch, lengths (one of 1, one full, the rest ragged) and blocks."""
    gen = torch.Generator().manual_seed(seed)
    batch = int(torch.randint(1, 5, (), generator=gen))
    v_lens = random_lengths(batch, int(torch.randint(1, 90, (), generator=gen)), gen)
    q_lens = random_lengths(batch, int(torch.randint(1, 40, (), generator=gen)), gen)
    rows, words = ([16, 32, 64][int(i)] for i in torch.randint(0, 3, (2,), generator=gen))
    return v_lens, q_lens, dict(block_rows=rows, block_words=words)


@pytest.mark.parametrize("seed", [11, 12])
def test_cqa_random_shapes(seed):
    v_lens, q_lens, options = random_case(seed)
    check_cqa(v_lens, q_lens, seed=seed, t=["auto", "inline", "pre"][seed % 3], **options)


@pytest.mark.parametrize("precision, stage", [("tf32", False), ("tf32", True), ("bf16", False), ("fp16", True)])
def test_cqa_low_precision_within_tolerance(precision, stage):
    """tf32 with the tensor core's operand truncation emulated by the interpreter (see kernels.common.mm)."""
    check_cqa([40, 1, 23], [1, 9, 5], precision, seed=1, block_rows=32, block_words=16, stage=stage)


@pytest.mark.parametrize("dim", [32, 16])
def test_cqa_small_dims(dim):
    """Dim 16 is narrower than a staged matmul's K chunk: the chunk must shrink to it."""
    check_cqa([19, 4], [3, 7], dim=dim, seed=2)  # IEEE fp32 always stages
    check_cqa([19, 4], [3, 7], "bf16", dim=dim, seed=2, stage=True)


def check_pool_concat(v_lens: list[int], q_lens: list[int], precision: str = "fp32", seed: int = 0, dim: int = 128,
                      **options) -> None:
    dtype, dot, tolerance = PRECISIONS[precision]
    pool = init_like_trained(PoolConcat(config(dim)), seed).to(DEVICE)
    v, q, v_mask, q_mask = inputs(v_lens, q_lens, dim, dtype, seed)
    with torch.no_grad():
        out = FusedPoolConcat(pool, allow_tf32=dot == "tf32", **options)(v, q, q_mask)
        ref = copy.deepcopy(pool).double()(v.double(), q.double(), q_mask)
    assert out.dtype == dtype and out.shape == v.shape
    assert_samples_close(out, ref, tolerance, v_mask, precision)


@pytest.mark.parametrize("v_lens, q_lens, options", [
    ([70, 1, 33], [1, 9, 40], dict(block_rows=32, block_words=16)),
    ([1], [1], {}),
    ([64, 17], [12, 128], {}),
])
def test_pool_concat_fp32_matches_reference(v_lens, q_lens, options):
    check_pool_concat(v_lens, q_lens, **options)


@pytest.mark.parametrize("seed", [11, 12])
def test_pool_concat_random_shapes(seed):
    v_lens, q_lens, options = random_case(seed)
    check_pool_concat(v_lens, q_lens, seed=seed, **options)


@pytest.mark.parametrize("precision, stage", [("tf32", False), ("bf16", False), ("fp16", True)])
def test_pool_concat_low_precision(precision, stage):
    check_pool_concat([40, 1, 23], [1, 9, 5], precision, seed=1, stage=stage)


@pytest.mark.parametrize("dim", [32, 16])
def test_pool_concat_small_dims(dim):
    """Dim 16 is narrower than a staged matmul's K chunk: the chunk must shrink to it."""
    check_pool_concat([19, 4], [3, 7], dim=dim, seed=2)  # IEEE fp32 always stages
    check_pool_concat([19, 4], [3, 7], "bf16", dim=dim, seed=2, stage=True)



@pytest.mark.parametrize("seed", [21, 22])
def test_the_launchers_alone_equal_the_reference(seed):
    """kernels.cqa.cqa and pool_concat called as functions (no module) with their pack functions'
    weights, on a random batch and lengths (one of 1, one full, the rest ragged): the default settings,
    and 16-row blocks (several row and word blocks, T computed apart)."""
    gen = torch.Generator().manual_seed(seed)
    batch = int(torch.randint(2, 5, (), generator=gen))
    v_lens = random_lengths(batch, int(torch.randint(17, 60, (), generator=gen)), gen)
    q_lens = random_lengths(batch, int(torch.randint(2, 40, (), generator=gen)), gen)
    attention = init_like_trained(ContextQueryAttention(config(32)), seed).to(DEVICE)
    pool = init_like_trained(PoolConcat(config(32)), seed).to(DEVICE)
    v, q, v_mask, q_mask = inputs(v_lens, q_lens, 32, torch.float32, seed)
    tolerance = PRECISIONS["fp32"].tolerance
    with torch.no_grad():
        ref_out, ref_score = copy.deepcopy(attention).double()(v.double(), q.double(), v_mask, q_mask)
        ref_pooled = copy.deepcopy(pool).double()(v.double(), q.double(), q_mask)
        for kernel in ("cqa", "pool_concat"):
            for settings in (None, calculate_settings(kernel, torch.float32, "ieee", 32, rows=16, keys=16)):
                if kernel == "cqa":
                    out, score = cqa(v, q, v_mask, q_mask, pack_cqa(attention, torch.float32), settings)
                    assert score.shape == (batch, max(v_lens), max(q_lens))
                    assert_samples_close(score, ref_score, tolerance, v_mask, f"similarity, settings {settings}")
                    assert_samples_close(out, ref_out, tolerance, v_mask, f"cqa, settings {settings}")
                else:
                    out = pool_concat(v, q, q_mask, pack_pool_concat(pool, torch.float32), settings)
                    assert_samples_close(out, ref_pooled, tolerance, v_mask, f"pool_concat, settings {settings}")
                assert out.shape == v.shape


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_benchmark_shape(precision):
    lens = torch.randint(1, 65, (256,), generator=torch.Generator().manual_seed(0)).tolist()
    v_lens, q_lens = [64, *lens[1:]], [12, *[1 + n % 12 for n in lens[1:]]]
    check_cqa(v_lens, q_lens, precision)
    check_pool_concat(v_lens, q_lens, precision)
