"""The stacked depthwise-separable convolution block (shared by video and query)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import SeqPANConfig


class DepthwiseSeparableConv(nn.Module):
    """Depthwise conv (SAME zero padding) -> pointwise dense with bias -> ReLU."""

    def __init__(self, dim: int, kernel: int):
        super().__init__()
        self.depthwise = nn.Parameter(torch.zeros(dim, 1, kernel))
        self.pointwise = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.depthwise.shape[-1]
        h = F.conv1d(x.transpose(1, 2), self.depthwise, padding=k // 2, groups=x.shape[-1])
        return torch.relu(self.pointwise(h.transpose(1, 2)))


class ConvBlock(nn.Module):
    """`conv_layers` x (layer norm -> depthwise-separable conv -> residual).

    With `mask` ([B, N] bool), the conv input is zeroed at padded positions, so each sample
    sees exactly the zero padding it would see alone (`isolated`); without it, padded
    positions are read as the original does (`batch`).
    """

    def __init__(self, cfg: SeqPANConfig):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(cfg.dim, eps=1e-6) for _ in range(cfg.conv_layers))
        self.convs = nn.ModuleList(DepthwiseSeparableConv(cfg.dim, cfg.conv_kernel) for _ in range(cfg.conv_layers))
        self.drop = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for norm, conv in zip(self.norms, self.convs):
            h = norm(x)
            if mask is not None:
                h = h * mask[..., None].to(h.dtype)
            x = self.drop(conv(h)) + x
        return x
