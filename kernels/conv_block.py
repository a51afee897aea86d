"""Fused conv block (`reference.conv_block.ConvBlock`): every layer of LayerNorm -> (mask) ->
depthwise conv (SAME zero padding) -> pointwise dense + bias -> ReLU -> residual, in one launch.

A program holds a tile of R consecutive rows of one sample for all layers. The depthwise conv
reads neighbours ±k//2 by gathering rows inside the tile, so each layer spoils k//2 rows at
each tile edge that borders more of the sequence: programs overlap by that halo (layers·k//2
rows a side) and store only their centre. A sequence that fits in one tile needs no halo:
rows outside it are the zero padding.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch import nn

from reference.conv_block import ConvBlock

from .common import (
    PackedWeights,
    check_dim,
    dot_precision,
    layer_norm,
    linear_t,
    load_rows,
    load_vector,
    matmul,
    scratch,
    store_rows,
)
from .settings import Settings, calculate_settings


@triton.jit
def _conv_block_kernel(
    x_ptr,  # [B, N, D] contiguous (strides N*D, D, 1), fp32, bf16 or fp16: the rows
    mask_ptr,  # [B, N] contiguous, any dtype (nonzero = a valid row): x's mask (HAS_MASK); unused otherwise
    dw_ptr,  # [LAYERS, K, D] contiguous, fp32: each layer's depthwise kernel, tap by tap
    w_ptr,  # [LAYERS, D, D] contiguous, x's dtype: each layer's pointwise weight, [in, out]
    vec_ptr,  # [LAYERS, 3, D] contiguous, fp32: each layer's norm weight, norm bias, pointwise bias
    out_ptr,  # [B, N, D] contiguous, x's dtype
    s,  # [programs, R, D] contiguous, fp32: each program's scratch of staged matmuls (STAGE); unused otherwise
    N, STRIDE, HALO,  # rows of x; rows a program stores; rows its tile reaches before (and after) them
    D: tl.constexpr, R: tl.constexpr, K: tl.constexpr, LAYERS: tl.constexpr,  # dim, tile rows, kernel width
    HAS_MASK: tl.constexpr, PREC: tl.constexpr, STAGE: tl.constexpr, EPS: tl.constexpr,
):
    """Rows [pid·STRIDE, pid·STRIDE + STRIDE) of ConvBlock(x, mask) from the tile starting HALO rows
    before (grid: (tiles, B))."""
    b = tl.program_id(1).to(tl.int64)
    s += (b * tl.num_programs(0) + tl.program_id(0)) * R * D
    t = tl.arange(0, R)
    rows = tl.program_id(0) * STRIDE - HALO + t
    ok = (rows >= 0) & (rows < N)
    if HAS_MASK:
        ok &= tl.load(mask_ptr + b * N + rows, mask=ok, other=0) != 0
    x = load_rows(x_ptr + b * N * D, rows, N, D)
    cols = tl.arange(0, D)
    for layer in range(LAYERS):
        vec = vec_ptr + layer * 3 * D
        h = tl.where(ok[:, None], layer_norm(x, load_vector(vec, D), load_vector(vec + D, D), D, EPS), 0.0)
        conv = tl.zeros([R, D], tl.float32)
        for k in tl.static_range(K):
            if k == K // 2:
                shifted = h
            else:
                src = t + (k - K // 2)
                index = tl.broadcast_to(tl.minimum(tl.maximum(src, 0), R - 1)[:, None], [R, D])
                shifted = tl.where(((src >= 0) & (src < R))[:, None], tl.gather(h, index, 0), 0.0)
            conv += shifted * tl.load(dw_ptr + (layer * K + k) * D + cols)[None, :]
        y = matmul(conv, w_ptr + layer * D * D, s, D, PREC, STAGE) + load_vector(vec + 2 * D, D)[None, :]
        x += tl.maximum(y, 0.0)
    keep = (t >= HALO) & (t < HALO + STRIDE)
    store_rows(out_ptr + b * N * D, tl.where(keep, rows, -1), N, x, D)


def pack_conv_block(block: ConvBlock, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """A conv block's weights for `conv_block`: the depthwise kernels [layers, K, D] (fp32), the
    pointwise weights [layers, D, D] ([in, out], in `dtype`) and per layer the norm's weight and
    bias and the pointwise bias [layers, 3, D] (fp32)."""
    convs, norms = block.convs, block.norms
    depthwise = torch.stack([c.depthwise[:, 0, :].t() for c in convs]).detach().float()  # [L, K, D]
    pointwise = torch.stack([linear_t(c.pointwise, dtype) for c in convs])  # [L, D, D]
    vectors = torch.stack([torch.stack([n.weight, n.bias, c.pointwise.bias]) for n, c in zip(norms, convs)])
    return depthwise, pointwise, vectors.detach().float()  # vectors: [L, 3, D]


def conv_block(x: torch.Tensor, mask: torch.Tensor | None, weights: tuple[torch.Tensor, ...], eps: float,
               settings: Settings | None = None) -> torch.Tensor:
    """`ConvBlock.forward(x, mask)` in one launch: every layer over x [B, N, D] (fp32, bf16 or fp16),
    with the rows where `mask` ([B, N], or None: none) is zero taken as padding, `weights` as
    `pack_conv_block` gives them for x's dtype, `eps` the layer norms'. `settings`:
    `calculate_settings("conv_block", ...)`'s (default: IEEE dots, default tile)."""
    b, n, d = x.shape
    settings = settings or calculate_settings("conv_block", x.dtype, "ieee", d)
    depthwise, pointwise, vectors = (t.contiguous() for t in weights)
    layers, kernel = depthwise.shape[:2]
    x = x.contiguous()
    r = settings.row_block(n)
    halo = 0 if n <= r else layers * (kernel // 2)
    stride = r - 2 * halo
    if stride < 1:
        raise ValueError(f"tile_rows {r} leaves no rows after a halo of {halo} on each side")
    out = torch.empty_like(x)
    mask_arg = x if mask is None else mask.contiguous()  # unused without a mask
    grid = (triton.cdiv(n, stride), b)
    _conv_block_kernel[grid](x, mask_arg, depthwise, pointwise, vectors, out,
                             scratch(settings.stage, grid[0] * b, r, d, x), n, stride, halo, d, r, kernel, layers,
                             mask is not None, settings.dot, settings.stage, eps, **settings.launch)
    return out


class FusedConvBlock(nn.Module):
    """Drop-in for a `ConvBlock` (inference only): same forward (`conv_block`), the block's own parameters.

    tile_rows, stage, num_warps: what to ask `kernels.settings.calculate_settings` for (None: its
    default); tile_rows caps the rows of a tile, stage asks for staged pointwise matmuls.
    """

    def __init__(self, block: ConvBlock, allow_tf32: bool = False, tile_rows: int | None = None,
                 stage: bool | None = None, num_warps: int | None = None):
        super().__init__()
        dim, kernel = block.convs[0].depthwise.shape[0], block.convs[0].depthwise.shape[-1]
        check_dim(dim)
        if kernel % 2 == 0:
            raise ValueError(f"the depthwise kernel must have odd width, got {kernel}")
        self.block = block
        self.precision = dot_precision(allow_tf32)
        self.dim, self.tile_rows, self.stage, self.num_warps = dim, tile_rows, stage, num_warps
        self.packed = PackedWeights(block, functools.partial(pack_conv_block, block))

    def settings(self, dtype: torch.dtype) -> Settings:
        """The launch settings for `dtype` inputs."""
        return calculate_settings("conv_block", dtype, self.precision, self.dim, rows=self.tile_rows, stage=self.stage,
                                  num_warps=self.num_warps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return conv_block(x, mask, self.packed.get(x.dtype), self.block.norms[0].eps, self.settings(x.dtype))
