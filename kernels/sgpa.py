"""Fused SGPA layer: one launch per direction does a whole `reference.sgpa.SGPALayer.forward`.

A program owns one sample's block of query rows and keeps everything on chip: norm_1, the
query projection, masked self- and cross-attention for every head (online softmax over key
blocks, so any length), s/x dense, sigmoid cross-gating, guided dense, the self-guided
bilinear head with its masked sigmoid, dense_1 + residual, norm_2, dense_2 + residual.
Keys and values are projected inside the key loop when one program covers a whole sequence;
when several row blocks would each redo that, a small LN+projection kernel writes them once.
"""
from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl
from torch import nn

from reference.sgpa import SGPALayer

from .common import (
    PackedWeights,
    cast,
    check_dim,
    check_mode,
    computed_apart,
    device_fn,
    dot_precision,
    layer_norm,
    linear_t,
    load_rows,
    load_vector,
    loop_bound,
    matmul,
    mm,
    online_softmax_step,
    scratch,
    store_rows,
)
from .settings import Settings, calculate_settings

# The packed [16, D, D] weights ([in, out] each), by the SGPALayer linear each row holds; `pack_sgpa`
# writes them in this order and the kernels' row numbers below are read from it ...
WEIGHT_ROWS = ("attention.query", "attention.f_key", "attention.f_value", "attention.t_key", "attention.t_value",
               "attention.s_dense", "attention.x_dense", "attention.s_gate", "attention.x_gate",
               "attention.guided_dense", "attention.bilinear_1.dense_1", "attention.bilinear_1.dense_2",
               "attention.bilinear_2.dense_1", "attention.bilinear_2.dense_2", "dense_1", "dense_2")
# ... and the packed fp32 [20, D] vectors: three norms (weight, bias), the biases of the first 10
# weights (bias of weight i < 10 is row V_BIAS + i), then the bilinears' and the dense layers' biases.
VECTOR_ROWS = (*(f"{norm}.{p}" for norm in ("norm_1", "norm_t", "norm_2") for p in ("weight", "bias")),
               *(f"{name}.bias" for name in WEIGHT_ROWS[:10]), "attention.bilinear_1.bias",
               "attention.bilinear_2.bias", "dense_1.bias", "dense_2.bias")


def _rows(order: tuple[str, ...], *names: str) -> list:
    return [tl.constexpr(order.index(name)) for name in names]


W_Q, W_FK, W_TK, W_SD, W_XD, W_SG, W_XG, W_GD, W_B1A, W_B1B, W_B2A, W_B2B, W_D1, W_D2 = _rows(
    WEIGHT_ROWS, "attention.query", "attention.f_key", "attention.t_key", "attention.s_dense", "attention.x_dense",
    "attention.s_gate", "attention.x_gate", "attention.guided_dense", *WEIGHT_ROWS[10:])
V_N1, V_NT, V_N2, V_BIAS, V_B1, V_B2, V_D1, V_D2 = _rows(
    VECTOR_ROWS, "norm_1.weight", "norm_t.weight", "norm_2.weight", "attention.query.bias", *VECTOR_ROWS[16:])


@device_fn
def _linear(a, w, v, s, i, bias, D: tl.constexpr, PREC: tl.constexpr, STAGE: tl.constexpr):
    """a @ W[i] + V[bias] for an fp32 [R, D] tile a (w, v: packed weights and vectors; s: scratch)."""
    return matmul(a, w + i * D * D, s, D, PREC, STAGE) + load_vector(v + bias * D, D)[None, :]


@device_fn
def _attend(q, row_ok, src_ptr, kv_ptr, kmask_ptr, L, w, v, s, KW: tl.constexpr, LN: tl.constexpr,
            D: tl.constexpr, H: tl.constexpr, HS: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
            PRE: tl.constexpr, PREC: tl.constexpr, STAGE: tl.constexpr, EPS: tl.constexpr):
    """All heads of masked attention of pre-scaled queries q [H, BN, HS] over one sample's L keys;
    returns the merged heads [BN, D].

    Keys/values come from the [L, 2D] rows at kv_ptr (PRE) or are projected here from the raw
    rows at src_ptr (norm LN, weights KW and KW + 1). The mask is row_ok ⊗ key mask filled with
    -1e30, so a padded query row attends uniformly to all L keys, as in the reference.
    """
    dt = w.dtype.element_ty
    if not PRE:
        ln_w = load_vector(v + LN * D, D)
        ln_b = load_vector(v + (LN + 1) * D, D)
    m = tl.full([H, BN], float("-inf"), tl.float32)
    l = tl.zeros([H, BN], tl.float32)
    acc = tl.zeros([H, BN, HS], tl.float32)
    for start in range(0, loop_bound(L), BK):
        cols = start + tl.arange(0, BK)
        in_range = cols < L
        if PRE:
            kv = kv_ptr + cols[:, None] * (2 * D) + tl.arange(0, D)[None, :]
            key = tl.load(kv, mask=in_range[:, None], other=0.0)
            value = tl.load(kv + D, mask=in_range[:, None], other=0.0)
        else:
            kn = layer_norm(load_rows(src_ptr, cols, L, D), ln_w, ln_b, D, EPS)
            key = cast(_linear(kn, w, v, s, KW, V_BIAS + KW, D, PREC, STAGE), dt)
            value = cast(_linear(kn, w, v, s, KW + 1, V_BIAS + KW + 1, D, PREC, STAGE), dt)
        score = mm(q, tl.permute(tl.reshape(key, [BK, H, HS]), [1, 2, 0]), PREC)  # [H, BN, BK]
        key_ok = tl.load(kmask_ptr + cols, mask=in_range, other=0) != 0
        p, alpha, m, l = online_softmax_step(score, row_ok[None, :, None] & key_ok[None, None, :],
                                             in_range[None, None, :], m, l, 2)
        acc = acc * alpha[:, :, None] + mm(p, tl.permute(tl.reshape(value, [BK, H, HS]), [1, 0, 2]), PREC)
    return tl.reshape(tl.permute(acc / l[:, :, None], [1, 0, 2]), [BN, D])


@triton.jit
def _sgpa_kernel(
    x_ptr,  # [B, N, D] contiguous (strides N*D, D, 1), x's dtype (fp32, bf16 or fp16): the rows updated
    y_ptr,  # [B, M, D] contiguous, x's dtype: the sequence x attends to besides itself
    xm_ptr,  # [B, N] contiguous, any dtype (nonzero = a valid row): x's mask
    ym_ptr,  # [B, M] contiguous, any dtype: y's mask
    kvx_ptr,  # [B, N, 2D] contiguous, x's dtype: each row's projected [key | value] of x (PRE); unused otherwise
    kvy_ptr,  # [B, M, 2D] contiguous, x's dtype: the same of y (PRE); unused otherwise
    w,  # [16, D, D] contiguous, x's dtype: the packed weights in WEIGHT_ROWS order, each [in, out]
    v,  # [20, D] contiguous, fp32: the packed vectors in VECTOR_ROWS order
    out_ptr,  # [B, N, D] contiguous, x's dtype: the updated rows
    s,  # [programs, SR, D] contiguous, fp32: each program's scratch of staged matmuls (STAGE); unused otherwise
    N, M,  # rows of x and of y
    D: tl.constexpr, HS: tl.constexpr, H: tl.constexpr,  # dim, head size, heads
    BN: tl.constexpr, BKX: tl.constexpr, BKY: tl.constexpr,  # the program's rows, key blocks over x and y
    SR: tl.constexpr, PRE: tl.constexpr, PREC: tl.constexpr, STAGE: tl.constexpr, EPS: tl.constexpr,
    SCALE: tl.constexpr,
):
    """out[b, rows] = SGPALayer(x, y, x_mask, y_mask)[b, rows] for the program's BN rows (grid:
    (row blocks, B))."""
    b = tl.program_id(1).to(tl.int64)
    s += (b * tl.num_programs(0) + tl.program_id(0)) * SR * D
    rows = tl.program_id(0) * BN + tl.arange(0, BN)
    x_ptr += b * N * D
    xm_ptr += b * N
    row_ok = tl.load(xm_ptr + rows, mask=rows < N, other=0) != 0
    ln_w = load_vector(v + V_N1 * D, D)
    ln_b = load_vector(v + (V_N1 + 1) * D, D)
    q = layer_norm(load_rows(x_ptr, rows, N, D), ln_w, ln_b, D, EPS)
    q = _linear(q, w, v, s, W_Q, V_BIAS + W_Q, D, PREC, STAGE) * SCALE
    q = tl.permute(tl.reshape(q, [BN, H, HS]), [1, 0, 2])
    att = _attend(q, row_ok, x_ptr, kvx_ptr + b * N * 2 * D, xm_ptr, N, w, v, s, W_FK, V_N1, D, H, HS, BN, BKX, PRE,
                  PREC, STAGE, EPS)
    s_val = _linear(att, w, v, s, W_SD, V_BIAS + W_SD, D, PREC, STAGE)
    att = _attend(q, row_ok, y_ptr + b * M * D, kvy_ptr + b * M * 2 * D, ym_ptr + b * M, M, w, v, s, W_TK, V_NT, D,
                  H, HS, BN, BKY, PRE, PREC, STAGE, EPS)
    x_val = _linear(att, w, v, s, W_XD, V_BIAS + W_XD, D, PREC, STAGE)

    gated = (tl.sigmoid(_linear(s_val, w, v, s, W_SG, V_BIAS + W_SG, D, PREC, STAGE)) * x_val
             + tl.sigmoid(_linear(x_val, w, v, s, W_XG, V_BIAS + W_XG, D, PREC, STAGE)) * s_val)
    guided = _linear(gated, w, v, s, W_GD, V_BIAS + W_GD, D, PREC, STAGE)
    # x and its norm are read again rather than kept live through the attention (registers)
    x = load_rows(x_ptr, rows, N, D)
    xn = layer_norm(x, ln_w, ln_b, D, EPS)
    score = matmul(xn, w + W_B1A * D * D, s, D, PREC, STAGE) + _linear(guided, w, v, s, W_B1B, V_B1, D, PREC, STAGE)
    value = matmul(xn, w + W_B2A * D * D, s, D, PREC, STAGE) + _linear(guided, w, v, s, W_B2B, V_B2, D, PREC, STAGE)
    att = tl.where(row_ok[:, None], tl.sigmoid(score), 0.0) * value  # sigmoid(-1e30) = 0 at padded rows

    res = _linear(att, w, v, s, W_D1, V_D1, D, PREC, STAGE) + x
    hn = layer_norm(res, load_vector(v + V_N2 * D, D), load_vector(v + (V_N2 + 1) * D, D), D, EPS)
    out = _linear(hn, w, v, s, W_D2, V_D2, D, PREC, STAGE) + res
    store_rows(out_ptr + b * N * D, rows, N, out, D)


@triton.jit
def _ln_kv_kernel(
    x_ptr,  # [B, L, D] contiguous, fp32, bf16 or fp16: the rows to project
    w,  # [16, D, D] contiguous, x's dtype: the packed weights (WEIGHT_ROWS), each [in, out]
    v,  # [20, D] contiguous, fp32: the packed vectors (VECTOR_ROWS)
    kv_ptr,  # [B, L, 2D] contiguous, x's dtype: each row's [key | value]
    s,  # [programs, BR, D] contiguous, fp32: each program's scratch of staged matmuls (STAGE); unused otherwise
    L,  # rows of x
    KW: tl.constexpr, LN: tl.constexpr,  # the key weight's row (the value's is KW + 1), the norm's vector row
    D: tl.constexpr, BR: tl.constexpr, PREC: tl.constexpr, STAGE: tl.constexpr, EPS: tl.constexpr,
):
    """kv[b, rows] = [LN(x) @ W[KW] + bias, LN(x) @ W[KW+1] + bias] for a block of rows (grid: (row
    blocks, B))."""
    b = tl.program_id(1).to(tl.int64)
    s += (b * tl.num_programs(0) + tl.program_id(0)) * BR * D
    rows = tl.program_id(0) * BR + tl.arange(0, BR)
    xn = layer_norm(load_rows(x_ptr + b * L * D, rows, L, D), load_vector(v + LN * D, D),
                    load_vector(v + (LN + 1) * D, D), D, EPS)
    out = kv_ptr + b * L * 2 * D + rows[:, None] * (2 * D) + tl.arange(0, D)[None, :]
    for j in tl.static_range(2):
        proj = _linear(xn, w, v, s, KW + j, V_BIAS + KW + j, D, PREC, STAGE)
        tl.store(out + j * D, cast(proj, kv_ptr.dtype.element_ty), mask=(rows < L)[:, None])


def pack_sgpa(layer: SGPALayer, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's weights for `sgpa`: its 16 dense weights ([in, out], in `dtype`) in the order of
    WEIGHT_ROWS and its fp32 vectors in the order of VECTOR_ROWS."""
    weights = torch.stack([linear_t(layer.get_submodule(name), dtype) for name in WEIGHT_ROWS])
    return weights, torch.stack([layer.get_parameter(name).detach().float() for name in VECTOR_ROWS])


def sgpa(x: torch.Tensor, y: torch.Tensor, x_mask: torch.Tensor, y_mask: torch.Tensor,
         weights: tuple[torch.Tensor, torch.Tensor], num_heads: int, eps: float, settings: Settings | None = None,
         kv: str = "auto") -> torch.Tensor:
    """`SGPALayer.forward(x, y, x_mask, y_mask)` in one launch (three when keys and values are
    projected apart): x [B, N, D] updated with itself and y [B, M, D] (fp32, bf16 or fp16), the masks
    [B, N] and [B, M] nonzero at valid rows, `weights` as `pack_sgpa` gives them for x's dtype, `eps` the
    layer norms'. `settings`: `calculate_settings("sgpa", ...)`'s (default: IEEE dots, default
    blocks); kv: "auto" projects keys and values inside the attention kernel when one row block
    covers x and in a separate launch otherwise, "inline" / "pre" force one way."""
    check_mode("kv", kv)
    b, n, d = x.shape
    m = y.shape[1]
    settings = settings or calculate_settings("sgpa", x.dtype, "ieee", d)
    w, v = (t.contiguous() for t in weights)
    x, y, x_mask, y_mask = x.contiguous(), y.contiguous(), x_mask.contiguous(), y_mask.contiguous()
    bn, bkx, bky = settings.row_block(n), settings.key_block(n), settings.key_block(m)
    grid = (triton.cdiv(n, bn), b)
    pre = computed_apart(kv, grid[0])
    if pre:
        kvx = _project_kv(x, w, v, settings, W_FK.value, V_N1.value, eps)
        kvy = _project_kv(y, w, v, settings, W_TK.value, V_NT.value, eps)
    else:
        kvx, kvy = x, y  # unused
    rows = bn if pre else max(bn, bkx, bky)  # inline K/V projections stage key blocks too
    out = torch.empty_like(x)
    hs = d // num_heads
    _sgpa_kernel[grid](x, y, x_mask, y_mask, kvx, kvy, w, v, out, scratch(settings.stage, grid[0] * b, rows, d, x),
                       n, m, d, hs, num_heads, bn, bkx, bky, rows, pre, settings.dot, settings.stage, eps,
                       1.0 / math.sqrt(hs), **settings.launch)
    return out


def _project_kv(x: torch.Tensor, w: torch.Tensor, v: torch.Tensor, settings: Settings, kw: int, ln: int,
                eps: float) -> torch.Tensor:
    """Each row's [key | value] of x [B, L, D] (`_ln_kv_kernel`)."""
    b, n, d = x.shape
    kv = torch.empty(b, n, 2 * d, device=x.device, dtype=x.dtype)
    br = settings.row_block(n)
    grid = (triton.cdiv(n, br), b)
    _ln_kv_kernel[grid](x, w, v, kv, scratch(settings.stage, grid[0] * b, br, d, x), n, kw, ln, d, br, settings.dot,
                        settings.stage, eps, **settings.launch)
    return kv


class FusedSGPALayer(nn.Module):
    """Drop-in for an `SGPALayer` (inference only): same forward (`sgpa`), the layer's own parameters.

    block_rows / block_keys cap the query-row and key blocks, stage asks for staged weight matmuls
    (`kernels.common.matmul`), num_warps the warps: what to ask `kernels.settings.calculate_settings`
    for (None: its default). kv: as `sgpa`'s.
    """

    def __init__(self, layer: SGPALayer, allow_tf32: bool = False, block_rows: int | None = None,
                 block_keys: int | None = None, kv: str = "auto", stage: bool | None = None,
                 num_warps: int | None = None):
        super().__init__()
        check_mode("kv", kv)
        dim, self.num_heads = layer.dense_1.in_features, layer.attention.num_heads
        check_dim(dim, dim // self.num_heads)
        self.layer = layer
        self.precision = dot_precision(allow_tf32)
        self.block_rows, self.block_keys, self.kv, self.stage = block_rows, block_keys, kv, stage
        self.num_warps = num_warps
        self.packed = PackedWeights(layer, functools.partial(pack_sgpa, layer))

    def settings(self, dtype: torch.dtype) -> Settings:
        """The launch settings for `dtype` inputs."""
        return calculate_settings("sgpa", dtype, self.precision, self.layer.dense_1.in_features, self.block_rows,
                                  self.block_keys, self.stage, self.num_warps)

    def forward(self, x: torch.Tensor, y: torch.Tensor, x_mask: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
        """Update `x` ([B, N, D]) with itself and with `y` ([B, M, D]), as SGPALayer.forward."""
        return sgpa(x, y, x_mask, y_mask, self.packed.get(x.dtype), self.num_heads, self.layer.norm_1.eps,
                    self.settings(x.dtype), self.kv)
