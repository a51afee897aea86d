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

import functools

import torch
import triton
import triton.language as tl
from torch import nn

from reference.cqa import ContextQueryAttention, PoolConcat

from .common import (
    PackedWeights,
    cast,
    check_dim,
    check_mode,
    computed_apart,
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
def _cqa_kernel(
    c_ptr,  # [B, LC, D] contiguous (strides LC*D, D, 1), fp32, bf16 or fp16: the context
    q_ptr,  # [B, LQ, D] contiguous, c's dtype: the query
    cm_ptr,  # [B, LC] contiguous, any dtype (nonzero = a valid row): the context's mask
    qm_ptr,  # [B, LQ] contiguous, any dtype: the query's mask
    t_ptr,  # [B, LQ, D] contiguous, fp32: T = S_cᵀ·C per word (PRE_T); unused otherwise
    vec_ptr,  # [3, D] contiguous, fp32: the similarity's w_context, w_query, w_mul
    w_ptr,  # [4, D, D] contiguous, c's dtype: the dense weight's four [in, out] blocks (c, c2q, c⊙c2q, c⊙q2c)
    out_ptr,  # [B, LC, D] contiguous, c's dtype: the query-aware context
    score_ptr,  # [B, LC, LQ] contiguous, c's dtype: the raw similarity S
    s,  # [programs, BC, D] contiguous, fp32: each program's scratch of staged matmuls (STAGE); unused otherwise
    LC, LQ,  # rows of the context and of the query
    D: tl.constexpr, BC: tl.constexpr, BQ: tl.constexpr, BT: tl.constexpr,  # dim; context, word, T row blocks
    PRE_T: tl.constexpr, PREC: tl.constexpr, STAGE: tl.constexpr,
):
    """out, score = ContextQueryAttention(c, q, c_mask, q_mask) for the program's BC context rows
    (grid: (row blocks, B))."""
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
def _column_context_kernel(
    c_ptr,  # [B, LC, D] contiguous, fp32, bf16 or fp16: the context
    q_ptr,  # [B, LQ, D] contiguous, c's dtype: the query
    cm_ptr,  # [B, LC] contiguous, any dtype (nonzero = a valid row): the context's mask
    vec_ptr,  # [3, D] contiguous, fp32: w_context, w_query, w_mul
    t_ptr,  # [B, LQ, D] contiguous, fp32: T per word
    LC, LQ,  # rows of the context and of the query
    D: tl.constexpr, BQ: tl.constexpr, BT: tl.constexpr, PREC: tl.constexpr,
):
    """t[b, words] = T for a block of query words (T as in _column_context; grid: (word blocks, B))."""
    b = tl.program_id(1).to(tl.int64)
    cols = tl.program_id(0) * BQ + tl.arange(0, BQ)
    q = load_rows(q_ptr + b * LQ * D, cols, LQ, D)
    t = _column_context(q, c_ptr + b * LC * D, cm_ptr + b * LC, LC, vec_ptr, D, BQ, BT, PREC)
    store_rows(t_ptr + b * LQ * D, cols, LQ, t, D)


def pack_cqa(cqa: ContextQueryAttention, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """A CQA's weights for `cqa`: its fp32 [3, D] similarity vectors and its dense weight as four
    [in, out] blocks [4, D, D] in `dtype`."""
    d = cqa.w_context.shape[0]
    vectors = torch.stack([cqa.w_context, cqa.w_query, cqa.w_mul]).detach().float()
    return vectors, linear_t(cqa.dense, dtype).reshape(4, d, d)


def cqa(c: torch.Tensor, q: torch.Tensor, c_mask: torch.Tensor, q_mask: torch.Tensor,
        weights: tuple[torch.Tensor, torch.Tensor], settings: Settings | None = None,
        t: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """`ContextQueryAttention.forward(c, q, c_mask, q_mask)` in one launch (two when T is computed
    apart): the query-aware context [B, N, D] and the raw similarity [B, N, M] of the context c
    [B, N, D] and the query q [B, M, D] (fp32, bf16 or fp16), the masks nonzero at valid rows,
    `weights` as `pack_cqa` gives them for c's dtype. `settings`: `calculate_settings("cqa", ...)`'s
    (default: IEEE dots, default blocks); t: "auto" computes T = S_cᵀ·C inside the main kernel when
    one program covers a sample's context and in a separate launch otherwise, "inline" / "pre" force
    one way."""
    check_mode("t", t)
    b, lc, d = c.shape
    lq = q.shape[1]
    settings = settings or calculate_settings("cqa", c.dtype, "ieee", d)
    vectors, w = (t.contiguous() for t in weights)
    c, q, c_mask, q_mask = c.contiguous(), q.contiguous(), c_mask.contiguous(), q_mask.contiguous()
    bc, bq, bt = settings.row_block(lc), settings.key_block(lq), settings.row_block(lc)
    grid = (triton.cdiv(lc, bc), b)
    pre = computed_apart(t, grid[0])
    column_context = torch.empty(b, lq, d, device=c.device, dtype=torch.float32) if pre else c
    if pre:
        _column_context_kernel[(triton.cdiv(lq, bq), b)](c, q, c_mask, vectors, column_context, lc, lq, d, bq, bt,
                                                         settings.dot, **settings.launch)
    out = torch.empty_like(c)
    score = torch.empty(b, lc, lq, device=c.device, dtype=c.dtype)
    _cqa_kernel[grid](c, q, c_mask, q_mask, column_context, vectors, w, out, score,
                      scratch(settings.stage, grid[0] * b, bc, d, c), lc, lq, d, bc, bq, bt, pre, settings.dot,
                      settings.stage, **settings.launch)
    return out, score


class FusedCQA(nn.Module):
    """Drop-in for a `ContextQueryAttention` (inference only): same forward (`cqa`), its own parameters.

    block_rows caps the context rows a program owns and block_words the words of one similarity
    block, stage asks for staged weight matmuls (`kernels.common.matmul`), num_warps the warps: what
    to ask `kernels.settings.calculate_settings` for (None: its default). t: as `cqa`'s.
    """

    def __init__(self, cqa: ContextQueryAttention, allow_tf32: bool = False, block_rows: int | None = None,
                 block_words: int | None = None, t: str = "auto", stage: bool | None = None,
                 num_warps: int | None = None):
        super().__init__()
        check_mode("t", t)
        check_dim(cqa.w_context.shape[0])
        self.cqa = cqa
        self.precision = dot_precision(allow_tf32)
        self.block_rows, self.block_words, self.t, self.stage = block_rows, block_words, t, stage
        self.num_warps = num_warps
        self.packed = PackedWeights(cqa, functools.partial(pack_cqa, cqa))

    def settings(self, dtype: torch.dtype) -> Settings:
        """The launch settings for `dtype` inputs."""
        return calculate_settings("cqa", dtype, self.precision, self.cqa.w_context.shape[0], self.block_rows,
                                  self.block_words, self.stage, self.num_warps)

    def forward(self, c: torch.Tensor, q: torch.Tensor, c_mask: torch.Tensor,
                q_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Query-aware context [B, N, D] and the raw similarity [B, N, M], as the reference."""
        return cqa(c, q, c_mask, q_mask, self.packed.get(c.dtype), self.settings(c.dtype), self.t)


@triton.jit
def _pool_concat_kernel(
    x_ptr,  # [B, N, D] contiguous (strides N*D, D, 1), fp32, bf16 or fp16: the rows
    y_ptr,  # [B, M, D] contiguous, x's dtype: the sequence pooled
    ym_ptr,  # [B, M] contiguous, any dtype (nonzero = a valid row): y's mask
    pw_ptr,  # [D] fp32: the pooling weight
    w_ptr,  # [2, D, D] contiguous, x's dtype: the dense weight's two [in, out] blocks (x, pooled)
    bias_ptr,  # [D] fp32: the dense bias
    out_ptr,  # [B, N, D] contiguous, x's dtype
    s,  # [programs, BN, D] contiguous, fp32: each program's scratch of staged matmuls (STAGE); unused otherwise
    N, M,  # rows of x and of y
    D: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr, PREC: tl.constexpr, STAGE: tl.constexpr,
):
    """out = [x, pooled(y)] @ W + bias for the program's BN rows of x (grid: (row blocks, B))."""
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


def pack_pool_concat(pool: PoolConcat, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """A PoolConcat's weights for `pool_concat`: its fp32 pooling weight [D], its dense weight as two
    [in, out] blocks [2, D, D] in `dtype`, its fp32 dense bias [D]."""
    d = pool.pool_weight.shape[0]
    return (pool.pool_weight.detach().float(), linear_t(pool.dense, dtype).reshape(2, d, d),
            pool.dense.bias.detach().float())


def pool_concat(x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor, weights: tuple[torch.Tensor, ...],
                settings: Settings | None = None) -> torch.Tensor:
    """`PoolConcat.forward(x, y, y_mask)` in one launch: [x, pooled(y)] @ W + bias for x [B, N, D] and
    the query y [B, M, D] (fp32, bf16 or fp16) pooled under its mask (nonzero at valid rows), `weights`
    as `pack_pool_concat` gives them for x's dtype. `settings`: `calculate_settings("pool_concat", ...)`'s
    (default: IEEE dots, default blocks)."""
    b, n, d = x.shape
    m = y.shape[1]
    settings = settings or calculate_settings("pool_concat", x.dtype, "ieee", d)
    pool_weight, w, bias = (t.contiguous() for t in weights)
    x, y, y_mask = x.contiguous(), y.contiguous(), y_mask.contiguous()
    out = torch.empty_like(x)
    bn = settings.row_block(n)
    grid = (triton.cdiv(n, bn), b)
    _pool_concat_kernel[grid](x, y, y_mask, pool_weight, w, bias, out, scratch(settings.stage, grid[0] * b, bn, d, x),
                              n, m, d, bn, settings.key_block(m), settings.dot, settings.stage, **settings.launch)
    return out


class FusedPoolConcat(nn.Module):
    """Drop-in for a `PoolConcat` (inference only): same forward (`pool_concat`), its own parameters.

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
        self.packed = PackedWeights(pool, functools.partial(pack_pool_concat, pool))

    def settings(self, dtype: torch.dtype) -> Settings:
        """The launch settings for `dtype` inputs."""
        return calculate_settings("pool_concat", dtype, self.precision, self.pool.pool_weight.shape[0],
                                  self.block_rows, self.block_words, self.stage, self.num_warps)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
        """[x, pooled(y)] @ W + bias for x [B, N, D] and the masked query y [B, M, D], as the reference."""
        return pool_concat(x, y, y_mask, self.packed.get(x.dtype), self.settings(x.dtype))
