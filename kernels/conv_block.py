"""Fused conv block (`reference.conv_block.ConvBlock`): every layer of LayerNorm -> (mask) ->
depthwise conv (SAME zero padding) -> pointwise dense + bias -> ReLU -> residual, in one launch.

A program holds a tile of R consecutive rows of one sample for all layers. The depthwise conv
reads neighbours ±k//2 by gathering rows inside the tile, so each layer spoils k//2 rows at
each tile edge that borders more of the sequence: programs overlap by that halo (layers·k//2
rows a side) and store only their centre. A sequence that fits in one tile needs no halo:
rows outside it are the zero padding.
"""
from __future__ import annotations

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
def _conv_block_kernel(x_ptr, mask_ptr, dw_ptr, w_ptr, vec_ptr, out_ptr, s, N, STRIDE, HALO, D: tl.constexpr,
                       R: tl.constexpr, K: tl.constexpr, LAYERS: tl.constexpr, HAS_MASK: tl.constexpr,
                       PREC: tl.constexpr, STAGE: tl.constexpr, EPS: tl.constexpr):
    """Rows [pid·STRIDE, pid·STRIDE + STRIDE) of ConvBlock(x, mask) from the tile starting HALO rows
    before (s: [programs, R, D] scratch of staged matmuls)."""
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


class FusedConvBlock(nn.Module):
    """Drop-in for a `ConvBlock` (inference only): same forward, the block's own parameters.

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
        self.packed = PackedWeights(block, self._pack)

    def _pack(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        convs, norms = self.block.convs, self.block.norms
        depthwise = torch.stack([c.depthwise[:, 0, :].t() for c in convs]).detach().float()  # [L, K, D]
        pointwise = torch.stack([linear_t(c.pointwise, dtype) for c in convs])  # [L, D, D]
        vectors = torch.stack([torch.stack([n.weight, n.bias, c.pointwise.bias]) for n, c in zip(norms, convs)])
        return depthwise, pointwise, vectors.detach().float()  # vectors: [L, 3, D]

    def settings(self, dtype: torch.dtype) -> Settings:
        """The launch settings for `dtype` inputs."""
        return calculate_settings("conv_block", dtype, self.precision, self.dim, rows=self.tile_rows, stage=self.stage,
                                  num_warps=self.num_warps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        depthwise, pointwise, vectors = self.packed.get(x.dtype)
        layers, kernel = depthwise.shape[:2]
        x = x.contiguous()
        settings = self.settings(x.dtype)
        r = settings.row_block(n)
        halo = 0 if n <= r else layers * (kernel // 2)
        stride = r - 2 * halo
        if stride < 1:
            raise ValueError(f"tile_rows {r} leaves no rows after a halo of {halo} on each side")
        out = torch.empty_like(x)
        mask_arg = x if mask is None else mask.contiguous()  # unused without a mask
        grid = (triton.cdiv(n, stride), b)
        stage = settings.stage
        _conv_block_kernel[grid](x, mask_arg, depthwise, pointwise, vectors, out, scratch(stage, grid[0] * b, r, d, x),
                                 n, stride, halo, d, r, kernel, layers, mask is not None, settings.dot, stage,
                                 self.block.norms[0].eps, **settings.launch)
        return out
