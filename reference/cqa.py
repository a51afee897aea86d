"""Context-query attention (CQA) and the weighted-pool concatenation that fuses its outputs."""
from __future__ import annotations

import torch
from torch import nn

from .config import SeqPANConfig
from .ops import mask_logits, masked_softmax


class ContextQueryAttention(nn.Module):
    """Trilinear similarity, both masked softmaxes, c2q and q2c, and the 4d -> d dense."""

    def __init__(self, cfg: SeqPANConfig):
        super().__init__()
        d = cfg.dim
        self.w_context = nn.Parameter(torch.zeros(d))
        self.w_query = nn.Parameter(torch.zeros(d))
        self.w_mul = nn.Parameter(torch.zeros(d))
        self.dense = nn.Linear(4 * d, d, bias=False)
        self.drop = nn.Dropout(cfg.drop_rate)

    def similarity(self, c: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """S[b, i, j] = c_i·w_c + q_j·w_q + (c_i ⊙ w_m)·q_j, shape [B, N, M]."""
        c, q = self.drop(c), self.drop(q)
        return (c @ self.w_context)[:, :, None] + (q @ self.w_query)[:, None, :] + (c * self.w_mul) @ q.transpose(1, 2)

    def forward(self, c: torch.Tensor, q: torch.Tensor, c_mask: torch.Tensor,
                q_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Query-aware context [B, N, D] and the raw similarity [B, N, M]."""
        score = self.similarity(c, q)
        s_row = masked_softmax(score, q_mask[:, None, :], dim=2)
        s_col = masked_softmax(score, c_mask[:, :, None], dim=1)
        c2q = s_row @ q
        q2c = (s_row @ s_col.transpose(1, 2)) @ c
        return self.dense(torch.cat([c, c2q, c * c2q, c * q2c], dim=-1)), score


class PoolConcat(nn.Module):
    """Concatenate each position of x with the masked attention-pooled summary of y, then dense."""

    def __init__(self, cfg: SeqPANConfig):
        super().__init__()
        self.pool_weight = nn.Parameter(torch.zeros(cfg.dim))
        self.dense = nn.Linear(2 * cfg.dim, cfg.dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
        alphas = torch.softmax(mask_logits(y @ self.pool_weight, y_mask), dim=1)
        pooled = (alphas[:, :, None] * y).sum(dim=1)
        return self.dense(torch.cat([x, pooled[:, None, :].expand_as(x)], dim=-1))
