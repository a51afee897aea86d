"""Fused context-query attention (`reference.cqa.ContextQueryAttention`) and `PoolConcat`.

CQA: a program owns one sample's block of context rows. Looping over blocks of query words it
computes the trilinear similarity (written out, the block's second output), the row softmax over
words online, c2q = S_r·Q and q2c = S_r·T with T = S_cᵀ·C (so q2c costs O(N·M·d), never the N×N
matrix S_r·S_cᵀ), then the 4d→d dense of [c, c2q, c⊙c2q, c⊙q2c] without writing the concat.
T needs the column softmax over all context rows: when one program covers the whole context it
is computed in place, otherwise once per sample by a second small kernel.

PoolConcat: each program pools the masked query (online softmax over its rows) and computes its
rows' dense output of [x, pooled]: one launch.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import nn

from reference.cqa import ContextQueryAttention, PoolConcat

from .common import (
    PackedWeights,
    cast,
    check_dim,
    device_fn,
    dot_precision,
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


@device_fn
def _similarity(c, q, wc, wq, wm, DT: tl.constexpr, PREC: tl.constexpr):
    """S = c·w_c ⊕ q·w_q + (c ⊙ w_m)·qᵀ for fp32 tiles c [R, D] and q [K, D] -> [R, K]."""
    cw = tl.sum(c * wc[None, :], 1)
    qw = tl.sum(q * wq[None, :], 1)
    return cw[:, None] + qw[None, :] + mm(c * wm[None, :], cast(tl.trans(q), DT), PREC)


@device_fn
def _column_context(q, c_ptr, cm_ptr, LC, vec_ptr, D: tl.constexpr, BQ: tl.constexpr, BT: tl.constexpr,
                    PREC: tl.constexpr):
    """T = softmax over context rows of S (masked by the context mask)ᵀ · C for a block of words
    q [BQ, D]: [BQ, D] fp32."""
    wc = load_vector(vec_ptr, D)
    wq = load_vector(vec_ptr + D, D)
    wm = load_vector(vec_ptr + 2 * D, D)
    dt = c_ptr.dtype.element_ty
    m = tl.full([BQ], float("-inf"), tl.float32)
    l = tl.zeros([BQ], tl.float32)
    acc = tl.zeros([BQ, D], tl.float32)
    for start in range(0, loop_bound(LC), BT):
        rows = start + tl.arange(0, BT)
        in_range = rows < LC
        c = load_rows(c_ptr, rows, LC, D)
        row_ok = tl.load(cm_ptr + rows, mask=in_range, other=0) != 0
        p, alpha, m, l = online_softmax_step(_similarity(c, q, wc, wq, wm, dt, PREC), row_ok[:, None],
                                             in_range[:, None], m, l, 0)
        acc = acc * alpha[:, None] + mm(tl.trans(p), cast(c, dt), PREC)
    return acc / l[:, None]


@triton.jit
def _cqa_kernel(c_ptr, q_ptr, cm_ptr, qm_ptr, t_ptr, vec_ptr, w_ptr, out_ptr, score_ptr, s, LC, LQ,
                D: tl.constexpr, BC: tl.constexpr, BQ: tl.constexpr, BT: tl.constexpr, PRE_T: tl.constexpr,
                PREC: tl.constexpr, STAGE: tl.constexpr):
    """out, score = ContextQueryAttention(c, q, c_mask, q_mask) for the program's BC context rows
    (s: [programs, BC, D] scratch of staged matmuls)."""
    b = tl.program_id(1).to(tl.int64)
    s += (b * tl.num_programs(0) + tl.program_id(0)) * BC * D
    rows = tl.program_id(0) * BC + tl.arange(0, BC)
    c_ptr += b * LC * D
    q_ptr += b * LQ * D
    cm_ptr += b * LC
    qm_ptr += b * LQ
    dt = c_ptr.dtype.element_ty
    wc = load_vector(vec_ptr, D)
    wq = load_vector(vec_ptr + D, D)
    wm = load_vector(vec_ptr + 2 * D, D)
    c = load_rows(c_ptr, rows, LC, D)
    m = tl.full([BC], float("-inf"), tl.float32)
    l = tl.zeros([BC], tl.float32)
    c2q = tl.zeros([BC, D], tl.float32)
    q2c = tl.zeros([BC, D], tl.float32)
    for start in range(0, loop_bound(LQ), BQ):
        cols = start + tl.arange(0, BQ)
        in_range = cols < LQ
        q = load_rows(q_ptr, cols, LQ, D)
        sim = _similarity(c, q, wc, wq, wm, dt, PREC)
        tl.store(score_ptr + b * LC * LQ + rows[:, None] * LQ + cols[None, :], cast(sim, score_ptr.dtype.element_ty),
                 mask=(rows < LC)[:, None] & in_range[None, :])
        if PRE_T:
            t = load_rows(t_ptr + b * LQ * D, cols, LQ, D)
        else:
            t = _column_context(q, c_ptr, cm_ptr, LC, vec_ptr, D, BQ, BT, PREC)
        key_ok = tl.load(qm_ptr + cols, mask=in_range, other=0) != 0
        p, alpha, m, l = online_softmax_step(sim, key_ok[None, :], in_range[None, :], m, l, 1)
        c2q = c2q * alpha[:, None] + mm(p, cast(q, dt), PREC)
        q2c = q2c * alpha[:, None] + mm(p, cast(t, dt), PREC)
    c2q = c2q / l[:, None]
    q2c = q2c / l[:, None]
    out = matmul(c, w_ptr, s, D, PREC, STAGE) + matmul(c2q, w_ptr + D * D, s, D, PREC, STAGE)
    out += matmul(c * c2q, w_ptr + 2 * D * D, s, D, PREC, STAGE) + matmul(c * q2c, w_ptr + 3 * D * D, s, D, PREC, STAGE)
    store_rows(out_ptr + b * LC * D, rows, LC, out, D)


@triton.jit
def _column_context_kernel(c_ptr, q_ptr, cm_ptr, vec_ptr, t_ptr, LC, LQ, D: tl.constexpr, BQ: tl.constexpr,
                           BT: tl.constexpr, PREC: tl.constexpr):
    """t[b, words] = T for a block of query words (T as in _column_context), fp32."""
    b = tl.program_id(1).to(tl.int64)
    cols = tl.program_id(0) * BQ + tl.arange(0, BQ)
    q = load_rows(q_ptr + b * LQ * D, cols, LQ, D)
    t = _column_context(q, c_ptr + b * LC * D, cm_ptr + b * LC, LC, vec_ptr, D, BQ, BT, PREC)
    store_rows(t_ptr + b * LQ * D, cols, LQ, t, D)


class FusedCQA(nn.Module):
    """Drop-in for a `ContextQueryAttention` (inference only): same forward, its own parameters.

    block_rows caps the context rows a program owns and block_words the words of one similarity
    block, stage asks for staged weight matmuls (`kernels.common.matmul`), num_warps the warps: what
    to ask `kernels.settings.calculate_settings` for (None: its default). t: "auto" computes
    T = S_cᵀ·C inside the main kernel when one program covers a sample's context and in a
    separate launch otherwise; "inline" / "pre" force one way.
    """

    def __init__(self, cqa: ContextQueryAttention, allow_tf32: bool = False, block_rows: int | None = None,
                 block_words: int | None = None, t: str = "auto", stage: bool | None = None,
                 num_warps: int | None = None):
        super().__init__()
        if t not in ("auto", "inline", "pre"):
            raise ValueError(f"t must be auto, inline or pre, got {t!r}")
        check_dim(cqa.w_context.shape[0])
        self.cqa = cqa
        self.precision = dot_precision(allow_tf32)
        self.block_rows, self.block_words, self.t, self.stage = block_rows, block_words, t, stage
        self.num_warps = num_warps
        self.packed = PackedWeights(cqa, self._pack)

    def _pack(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.cqa.w_context.shape[0]
        vectors = torch.stack([self.cqa.w_context, self.cqa.w_query, self.cqa.w_mul]).detach().float()
        return vectors, linear_t(self.cqa.dense, dtype).reshape(4, d, d)

    def settings(self, dtype: torch.dtype) -> Settings:
        """The launch settings for `dtype` inputs."""
        return calculate_settings("cqa", dtype, self.precision, self.cqa.w_context.shape[0], self.block_rows,
                                  self.block_words, self.stage, self.num_warps)

    def forward(self, c: torch.Tensor, q: torch.Tensor, c_mask: torch.Tensor,
                q_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Query-aware context [B, N, D] and the raw similarity [B, N, M], as the reference."""
        b, lc, d = c.shape
        lq = q.shape[1]
        vectors, weights = self.packed.get(c.dtype)
        c, q, c_mask, q_mask = c.contiguous(), q.contiguous(), c_mask.contiguous(), q_mask.contiguous()
        settings = self.settings(c.dtype)
        bc, bq, bt = settings.row_block(lc), settings.key_block(lq), settings.row_block(lc)
        grid = (triton.cdiv(lc, bc), b)
        pre = self.t == "pre" or (self.t == "auto" and grid[0] > 1)
        t = torch.empty(b, lq, d, device=c.device, dtype=torch.float32) if pre else c
        if pre:
            _column_context_kernel[(triton.cdiv(lq, bq), b)](c, q, c_mask, vectors, t, lc, lq, d, bq, bt,
                                                             settings.dot, **settings.launch)
        out = torch.empty_like(c)
        score = torch.empty(b, lc, lq, device=c.device, dtype=c.dtype)
        stage = settings.stage
        _cqa_kernel[grid](c, q, c_mask, q_mask, t, vectors, weights, out, score, scratch(stage, grid[0] * b, bc, d, c),
                          lc, lq, d, bc, bq, bt, pre, settings.dot, stage, **settings.launch)
        return out, score


@triton.jit
def _pool_concat_kernel(x_ptr, y_ptr, ym_ptr, pw_ptr, w_ptr, bias_ptr, out_ptr, s, N, M, D: tl.constexpr,
                        BN: tl.constexpr, BM: tl.constexpr, PREC: tl.constexpr, STAGE: tl.constexpr):
    """out = [x, pooled(y)] @ W + bias for the program's BN rows of x (s: staged matmul scratch)."""
    b = tl.program_id(1).to(tl.int64)
    s += (b * tl.num_programs(0) + tl.program_id(0)) * BN * D
    y_ptr += b * M * D
    ym_ptr += b * M
    pw = load_vector(pw_ptr, D)
    m = tl.full([1], float("-inf"), tl.float32)
    l = tl.zeros([1], tl.float32)
    pooled = tl.zeros([D], tl.float32)
    for start in range(0, loop_bound(M), BM):
        cols = start + tl.arange(0, BM)
        in_range = cols < M
        y = load_rows(y_ptr, cols, M, D)
        ok = tl.load(ym_ptr + cols, mask=in_range, other=0) != 0
        logit = tl.sum(y * pw[None, :], 1)[None, :]  # [1, BM]: one row of scores
        p, alpha, m, l = online_softmax_step(logit, ok[None, :], in_range[None, :], m, l, 1)
        pooled = pooled * alpha + tl.sum(tl.trans(p) * y, 0)
    pooled = tl.broadcast_to((pooled / l)[None, :], [BN, D])  # every row's copy of the summary
    rows = tl.program_id(0) * BN + tl.arange(0, BN)
    out = matmul(load_rows(x_ptr + b * N * D, rows, N, D), w_ptr, s, D, PREC, STAGE)
    out += matmul(pooled, w_ptr + D * D, s, D, PREC, STAGE) + load_vector(bias_ptr, D)[None, :]
    store_rows(out_ptr + b * N * D, rows, N, out, D)


class FusedPoolConcat(nn.Module):
    """Drop-in for a `PoolConcat` (inference only): same forward, its own parameters.

    block_rows caps the rows a program owns and block_words the words of one pooling step, stage
    asks for staged weight matmuls, num_warps the warps: what to ask
    `kernels.settings.calculate_settings` for (None: its default).
    """

    def __init__(self, pool: PoolConcat, allow_tf32: bool = False, block_rows: int | None = None,
                 block_words: int | None = None, stage: bool | None = None, num_warps: int | None = None):
        super().__init__()
        check_dim(pool.pool_weight.shape[0])
        self.pool = pool
        self.precision = dot_precision(allow_tf32)
        self.block_rows, self.block_words, self.stage, self.num_warps = block_rows, block_words, stage, num_warps
        self.packed = PackedWeights(pool, self._pack)

    def _pack(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        d = self.pool.pool_weight.shape[0]
        return (self.pool.pool_weight.detach().float(), linear_t(self.pool.dense, dtype).reshape(2, d, d),
                self.pool.dense.bias.detach().float())

    def settings(self, dtype: torch.dtype) -> Settings:
        """The launch settings for `dtype` inputs."""
        return calculate_settings("pool_concat", dtype, self.precision, self.pool.pool_weight.shape[0],
                                  self.block_rows, self.block_words, self.stage, self.num_warps)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
        """[x, pooled(y)] @ W + bias for x [B, N, D] and the masked query y [B, M, D], as the reference."""
        b, n, d = x.shape
        m = y.shape[1]
        pool_weight, weights, bias = self.packed.get(x.dtype)
        x, y, y_mask = x.contiguous(), y.contiguous(), y_mask.contiguous()
        out = torch.empty_like(x)
        settings = self.settings(x.dtype)
        bn = settings.row_block(n)
        grid = (triton.cdiv(n, bn), b)
        stage = settings.stage
        _pool_concat_kernel[grid](x, y, y_mask, pool_weight, weights, bias, out, scratch(stage, grid[0] * b, bn, d, x),
                                  n, m, d, bn, settings.key_block(m), settings.dot, stage, **settings.launch)
        return out
