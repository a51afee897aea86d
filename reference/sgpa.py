"""Self-guided parallel attention (SGPA): parallel self/cross attention with cross-gating."""
from __future__ import annotations

import torch
from torch import nn

from .attention import attend
from .config import SeqPANConfig
from .ops import mask_logits


class Bilinear(nn.Module):
    """a·W1 + b·W2 + bias (two bias-free dense layers and one shared bias)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dense_1 = nn.Linear(dim, dim, bias=False)
        self.dense_2 = nn.Linear(dim, dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.dense_1(a) + self.dense_2(b) + self.bias


class DualMultiheadAttention(nn.Module):
    """Self- and cross-attention sharing one query projection, merged by cross-gating and a
    self-guided bilinear head."""

    def __init__(self, cfg: SeqPANConfig):
        super().__init__()
        d = cfg.dim
        self.num_heads = cfg.num_heads
        names = ("query", "f_key", "f_value", "t_key", "t_value", "s_dense", "x_dense", "s_gate", "x_gate",
                 "guided_dense")
        for name in names:
            setattr(self, name, nn.Linear(d, d))
        self.bilinear_1 = Bilinear(d)
        self.bilinear_2 = Bilinear(d)
        self.drop = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor, y: torch.Tensor, x_mask: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
        query = self.query(x)
        s_value = self.s_dense(attend(query, self.f_key(x), self.f_value(x), x_mask, x_mask, self.num_heads, self.drop))
        x_value = self.x_dense(attend(query, self.t_key(y), self.t_value(y), x_mask, y_mask, self.num_heads, self.drop))
        gated = torch.sigmoid(self.s_gate(s_value)) * x_value + torch.sigmoid(self.x_gate(x_value)) * s_value
        guided = self.guided_dense(gated)
        scores = self.bilinear_1(x, guided)
        values = self.bilinear_2(x, guided)
        return torch.sigmoid(mask_logits(scores, x_mask[..., None])) * values


class SGPALayer(nn.Module):
    """One SGPA block: pre-norm dual attention + dense + residual, then a dense sub-layer."""

    def __init__(self, cfg: SeqPANConfig):
        super().__init__()
        self.norm_1 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.norm_t = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.attention = DualMultiheadAttention(cfg)
        self.dense_1 = nn.Linear(cfg.dim, cfg.dim)
        self.norm_2 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.dense_2 = nn.Linear(cfg.dim, cfg.dim)
        self.drop = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor, y: torch.Tensor, x_mask: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
        """Update `x` ([B, N, D]) with itself and with `y` ([B, M, D])."""
        h = self.dense_1(self.attention(self.norm_1(x), self.norm_t(y), x_mask, y_mask))
        residual = self.drop(h) + x
        return self.drop(self.dense_2(self.drop(self.norm_2(residual)))) + residual
