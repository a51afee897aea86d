"""Masked multi-head scaled dot-product attention, as the original computes it."""
from __future__ import annotations

import math

import torch
from torch import nn

from .ops import masked_softmax


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, N, D] -> [B, H, N, D/H]."""
    b, n, d = x.shape
    return x.reshape(b, n, num_heads, d // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, N, D/H] -> [B, N, D]."""
    b, h, n, s = x.shape
    return x.transpose(1, 2).reshape(b, n, h * s)


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, from_mask: torch.Tensor,
           to_mask: torch.Tensor, num_heads: int, drop: nn.Module) -> torch.Tensor:
    """Scaled dot-product attention of [B, N, D] queries over [B, M, D] keys/values.

    The mask is from_mask ⊗ to_mask: a padded query row is fully masked and so attends
    uniformly to every position, which is what the original computes there.
    """
    q, k, v = (split_heads(t, num_heads) for t in (query, key, value))
    scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    mask = (from_mask[:, :, None] & to_mask[:, None, :])[:, None]
    return merge_heads(torch.matmul(drop(masked_softmax(scores, mask)), v))
