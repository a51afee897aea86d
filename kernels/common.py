"""Pieces every kernel shares: the dot helper, layer norm, block sizes, weight packing."""
from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl
from torch import nn

from . import settings

INTERPRET = tl.constexpr(settings.INTERPRETED)

MASK_VALUE = tl.constexpr(-1e30)  # the original's mask fill; only ever used in fp32 registers
STAGE_K = tl.constexpr(settings.STAGE_K)
# a block's part shared by all of a sample's programs: "pre" computed once in a launch of its own,
# "inline" by each program, "auto" inline when one program covers the sample and pre otherwise
MODES = ("auto", "inline", "pre")


def device_fn(fn):
    """@triton.jit for a helper that kernels call. Under the interpreter the plain function is
    used instead: it runs the same, while every call of a jit function there re-patches
    triton.language (about 2 ms), which would dominate the CPU test time."""
    return fn if INTERPRET else triton.jit(fn)


@device_fn
def cast(x, dtype):
    """x.to(dtype) rounding to nearest even. The interpreter truncates fp32 -> bf16, so there the
    rounding is done on the fp32 bits first (the cast that follows is then exact)."""
    if INTERPRET:
        if dtype == tl.bfloat16:
            bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
            x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


@device_fn
def tf32_bits(x, ROUND: tl.constexpr):
    """fp32 x with the 13 mantissa bits TF32 drops cleared: rounded to nearest (ties away from
    zero, as cvt.rna.tf32.f32) when ROUND, truncated otherwise (what a tensor core does with
    the fp32 operands of a TF32 dot: it ignores those bits)."""
    bits = x.to(tl.uint32, bitcast=True)
    if ROUND:
        bits += 0x1000
    return (bits & 0xFFFFE000).to(tl.float32, bitcast=True)


@device_fn
def mm(a, b, PREC: tl.constexpr):
    """a @ b with `a` rounded to b's dtype and fp32 accumulation.

    TF32 (PREC "tf32", for fp32 operands): both operands are rounded to TF32 first; the tensor core
    would truncate them, which biases every product towards zero (3-4x the error of rounding and
    over the 1e-3 bound on SGPA and CQA: bench/results/tf32-accuracy-cpu.md). The interpreter
    computes its dots in IEEE fp32, so there the truncation is emulated, making the CPU tests
    check the accuracy a GPU gets.
    The interpreter's tl.dot gives garbage on bf16 operands, so there both operands (already
    rounded) are upcast to fp32, which is exact; compiled, the dot runs on b's dtype.
    """
    a = cast(a, b.dtype)
    if PREC == "tf32":
        a, b = tf32_bits(a, True), tf32_bits(b, True)
    if INTERPRET:
        a, b = a.to(tl.float32), b.to(tl.float32)
        if PREC == "tf32":
            a, b = tf32_bits(a, False), tf32_bits(b, False)
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PREC)


@device_fn
def matmul(a, w_ptr, scratch_ptr, D: tl.constexpr, PREC: tl.constexpr, STAGE: tl.constexpr):
    """a [R, D] (fp32 registers) @ the [D, D] weight at w_ptr ([in, out]), fp32 accumulation.

    STAGE (for IEEE fp32): `a` goes through this program's [R, D] fp32 scratch rows and the
    product is a loop over K chunks. A compiled fp32 dot is unrolled FMAs staged through shared
    memory, so one over the whole [D, D] weight costs minutes of compile time and most of the
    shared memory; the loop holds one chunk's dot instead. Otherwise the weight is loaded whole.
    """
    if STAGE:
        rows = tl.arange(0, a.shape[0])
        cols = tl.arange(0, D)
        chunk = tl.arange(0, STAGE_K if STAGE_K < D else D)  # a chunk never reaches past row D
        tl.debug_barrier()  # earlier readers of the scratch are done
        tl.store(scratch_ptr + rows[:, None] * D + cols[None, :], a)
        tl.debug_barrier()
        acc = tl.zeros([a.shape[0], D], tl.float32)
        for k in range(0, D, STAGE_K if STAGE_K < D else D):
            a_k = tl.load(scratch_ptr + rows[:, None] * D + k + chunk[None, :])
            acc += mm(a_k, tl.load(w_ptr + (k + chunk)[:, None] * D + cols[None, :]), PREC)
        return acc
    else:
        return mm(a, load_matrix(w_ptr, D, D, D), PREC)


@device_fn
def online_softmax_step(score, ok, in_range, m, l, AXIS: tl.constexpr):
    """One block of a masked softmax along AXIS, computed online (flash-attention style).

    score: the block's fp32 scores; entries where `ok` is false get the original's mask value
    (-1e30) and entries past the sequence (`in_range` false) are left out (both broadcast to
    score). m, l: the running maximum and sum (score's shape without AXIS; start at -inf and 0).
    Returns (p, alpha, m, l): the block's unnormalised probabilities, the factor that rescales
    what was accumulated before (acc = acc * alpha + p @ values), the new maximum and sum; the
    softmax-weighted sum is acc / l after the last block.
    """
    score = tl.where(in_range, tl.where(ok, score, MASK_VALUE), float("-inf"))
    m_new = tl.maximum(m, tl.max(score, AXIS))
    alpha = tl.exp(m - m_new)
    p = tl.exp(score - tl.expand_dims(m_new, AXIS))
    return p, alpha, m_new, l * alpha + tl.sum(p, AXIS)


@device_fn
def loop_bound(n):
    """A runtime loop bound for range(): the interpreter passes scalars as 1-element arrays,
    which NumPy 2 refuses to use as an index, so there it becomes a Python int."""
    if INTERPRET:
        return n.handle.data.item()
    else:
        return n


@device_fn
def layer_norm(x, w, b, D: tl.constexpr, EPS: tl.constexpr):
    """Row-wise layer norm of an fp32 [R, D] tile with [D] weight and bias."""
    mean = tl.sum(x, 1) / D
    xc = x - mean[:, None]
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, 1) / D + EPS)
    return xc * rstd[:, None] * w[None, :] + b[None, :]


@device_fn
def load_rows(ptr, rows, n_rows, D: tl.constexpr):
    """Rows `rows` of a contiguous [n_rows, D] matrix as fp32 (rows outside [0, n_rows) read 0)."""
    ok = (rows >= 0) & (rows < n_rows)
    return tl.load(ptr + rows[:, None] * D + tl.arange(0, D)[None, :], mask=ok[:, None], other=0.0).to(tl.float32)


@device_fn
def load_matrix(ptr, R: tl.constexpr, C: tl.constexpr, stride: tl.constexpr):
    """A dense [R, C] tile whose rows are `stride` elements apart."""
    return tl.load(ptr + tl.arange(0, R)[:, None] * stride + tl.arange(0, C)[None, :])


@device_fn
def load_vector(ptr, D: tl.constexpr):
    return tl.load(ptr + tl.arange(0, D)).to(tl.float32)


def dot_precision(allow_tf32: bool) -> str:
    return "tf32" if allow_tf32 else "ieee"


def scratch(stage: bool, programs: int, rows: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """Per-program [rows, dim] fp32 scratch for staged matmuls (a placeholder when not staging)."""
    return torch.empty(programs, rows, dim, device=like.device, dtype=torch.float32) if stage else like


def check_mode(name: str, value: str) -> str:
    """`value` when it is one of MODES (how a launcher computes a block's shared part), else ValueError."""
    if value not in MODES:
        raise ValueError(f"{name} must be auto, inline or pre, got {value!r}")
    return value


def computed_apart(mode: str, programs_per_sample: int) -> bool:
    """Whether a block's shared part runs in a launch of its own: "pre", or "auto" with more than one
    program per sample (see MODES)."""
    return mode == "pre" or (mode == "auto" and programs_per_sample > 1)


def check_dim(dim: int, head_size: int | None = None) -> None:
    """The kernels hold whole rows in registers: dim (and head size) must be powers of two >= 16."""
    for name, v in (("dim", dim), ("head size", head_size)):
        if v is not None and (v < 16 or v & (v - 1)):
            raise ValueError(f"Triton kernels need a power-of-two {name} >= 16, got {v}")


class PackedWeights:
    """A module's parameters re-laid out for a kernel, rebuilt when the dtype, device or the
    parameters themselves change (a new tensor or an in-place update). `packs` counts the builds:
    each frees the copies that CUDA graphs captured before read (engine.cuda_graphs.GraphCache)."""

    def __init__(self, module: nn.Module, pack: Callable[[torch.dtype], tuple[torch.Tensor, ...]]):
        self._params = list(module.parameters())
        self._pack = pack
        self._key: tuple | None = None
        self._value: tuple[torch.Tensor, ...] = ()
        self.packs = 0

    def get(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        key = (dtype, *((p.data_ptr(), p._version) for p in self._params))
        if key != self._key:
            with torch.no_grad():
                self._value = tuple(t.contiguous() for t in self._pack(dtype))
            self._key = key
            self.packs += 1
        return self._value


def linear_t(linear: nn.Linear, dtype: torch.dtype) -> torch.Tensor:
    """A dense layer's weight as [in, out] in `dtype`, the layout the kernels multiply by."""
    return linear.weight.detach().t().to(dtype)


@device_fn
def store_rows(ptr, rows, n_rows, value, D: tl.constexpr):
    """Store an fp32 [R, D] tile into rows `rows` (those in [0, n_rows)) in the pointer's dtype."""
    ok = (rows >= 0) & (rows < n_rows)
    tl.store(ptr + rows[:, None] * D + tl.arange(0, D)[None, :], cast(value, ptr.dtype.element_ty), mask=ok[:, None])
