"""kernels.common's dot helper in TF32 (what the interpreter emulates) and kernels.settings."""
from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from kernels.common import mm
from kernels.settings import RULES, block_size, calculate_settings

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@triton.jit
def _mm_kernel(a_ptr, b_ptr, out_ptr, N: tl.constexpr, PREC: tl.constexpr):
    idx = tl.arange(0, N)[:, None] * N + tl.arange(0, N)[None, :]
    tl.store(out_ptr + idx, mm(tl.load(a_ptr + idx), tl.load(b_ptr + idx), PREC))


def dot(a: torch.Tensor, b: torch.Tensor, precision: str) -> torch.Tensor:
    out = torch.empty_like(a)
    _mm_kernel[(1,)](a, b, out, a.shape[0], precision)
    return out


def tf32_round(x: torch.Tensor) -> torch.Tensor:
    """fp32 -> TF32 by hand: round the 13 dropped mantissa bits to nearest, ties away from zero."""
    bits = x.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    return ((bits + 0x1000) & 0xFFFFE000).to(torch.uint32).view(torch.float32)


def test_tf32_dot_rounds_both_operands():
    """A TF32 dot is the product of the TF32-rounded operands (fp32 accumulation): on a GPU the
    kernel rounds them and the tensor core keeps them; under the interpreter the tensor core's
    truncation is emulated on top, which rounded values pass through unchanged."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 32, 32, generator=gen).to(DEVICE)
    want = tf32_round(a).double() @ tf32_round(b).double()
    exact = a.double() @ b.double()
    got = dot(a, b, "tf32").double()
    assert (got - want).norm() / want.norm() < 1e-6  # only the fp32 accumulation differs
    assert (got - exact).norm() / exact.norm() > 1e-5  # TF32 loses what IEEE fp32 keeps ...
    assert (dot(a, b, "ieee").double() - exact).norm() / exact.norm() < 1e-6  # ... which the IEEE dot keeps


def test_tf32_rounding_is_to_nearest():
    """2^-11 above 1 is a tie at TF32's precision (10 mantissa bits): rounded away from zero, where
    the tensor core's truncation would drop it; 2^-12 above 1 rounds down to 1."""
    a = torch.zeros(16, 16, device=DEVICE)
    a[0, 0] = 1 + 2**-11
    a[1, 0] = 1 + 2**-12
    a[2, 0] = -(1 + 2**-11)
    b = torch.zeros(16, 16, device=DEVICE)
    b[0, 0] = 1.0
    got = dot(a, b, "tf32")[:3, 0].tolist()
    assert got == [1 + 2**-10, 1.0, -(1 + 2**-10)]


def test_settings_defaults_and_clamps():
    """What a GPU launches (interpreted=False); the interpreter only lifts the block limits."""
    rule = RULES["sgpa"]["half"]
    default = calculate_settings("sgpa", torch.bfloat16, "ieee", 128, interpreted=False)
    assert (default.rows, default.keys, default.stage) == (rule.rows, rule.keys, False)
    assert calculate_settings("sgpa", torch.bfloat16, "ieee", 128, interpreted=True) == default
    asked = calculate_settings("sgpa", torch.bfloat16, "ieee", 128, rows=4096, keys=48, stage=True, num_warps=4,
                               interpreted=False)
    assert (asked.rows, asked.keys, asked.stage, asked.num_warps) == (rule.max_rows, 64, True, 4)
    assert asked.row_block(5) == 16 and asked.row_block(100_000) == rule.max_rows
    assert calculate_settings("sgpa", torch.bfloat16, "ieee", 128, rows=4096, interpreted=True).rows == 256
    # IEEE fp32 always stages (unstaged it compiles for minutes and outgrows shared memory)
    assert calculate_settings("cqa", torch.float32, "ieee", 128, stage=False).stage
    assert not calculate_settings("cqa", torch.float32, "tf32", 128, stage=False).stage
    # whole [dim, dim] weights over 64 KiB stage too; TF32 dots only for fp32 tensors
    assert calculate_settings("sgpa", torch.bfloat16, "ieee", 256, stage=False).stage
    assert calculate_settings("sgpa", torch.float32, "tf32", 128).dot == "tf32"
    assert calculate_settings("sgpa", torch.bfloat16, "tf32", 128).dot == "ieee"
    with pytest.raises(ValueError, match="block rows must be positive"):
        calculate_settings("pool_concat", torch.float16, "ieee", 64, rows=0)
    with pytest.raises(ValueError, match="fp32, bf16 or fp16"):
        calculate_settings("conv_block", torch.float64, "ieee", 64)


def test_limits_shrink_above_dim_128_and_pipelining_follows_the_weights():
    small, large = (calculate_settings("sgpa", torch.bfloat16, "ieee", d, rows=4096, keys=4096, interpreted=False)
                    for d in (128, 256))
    assert (large.rows, large.keys) == (small.rows // 2, small.keys // 2)
    # three 64 KiB tf32 weights in flight overflowed the conv block's shared memory: two now
    assert calculate_settings("conv_block", torch.float32, "tf32", 128).num_stages == 2
    assert calculate_settings("conv_block", torch.bfloat16, "ieee", 128).num_stages == 3


def test_block_size():
    assert [block_size(n, 64) for n in (1, 16, 17, 33, 64, 65, 1000)] == [16, 16, 32, 64, 64, 64, 64]


def test_a_shared_part_is_computed_apart_when_pre_or_auto_with_several_programs():
    from kernels.common import computed_apart

    assert [computed_apart(mode, programs) for mode in ("auto", "inline", "pre") for programs in (1, 2)] == \
        [False, True, False, False, True, True]
