"""The conditioned localizer (feature encoder applied twice, start/end heads) and span decoding."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .attention import attend
from .config import SeqPANConfig
from .conv_block import ConvBlock
from .embedding import PositionEmbedding
from .ops import mask_logits


class LocalizerOutput(NamedTuple):
    start_logits: torch.Tensor  # [B, N], unmasked
    end_logits: torch.Tensor  # [B, N], unmasked
    start_index: torch.Tensor  # [B] int64
    end_index: torch.Tensor  # [B] int64
    score: torch.Tensor  # [B], p_start(start) * p_end(end)


class FeatureEncoder(nn.Module):
    """Position embedding -> conv block -> pre-norm self-attention -> dense sub-layer."""

    def __init__(self, cfg: SeqPANConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.pos_emb = PositionEmbedding(cfg)
        self.conv_block = ConvBlock(cfg)
        self.norm_1 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.query = nn.Linear(cfg.dim, cfg.dim)
        self.key = nn.Linear(cfg.dim, cfg.dim)
        self.value = nn.Linear(cfg.dim, cfg.dim)
        self.norm_2 = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.dense = nn.Linear(cfg.dim, cfg.dim)
        self.drop = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, conv_mask: torch.Tensor | None) -> torch.Tensor:
        feats = self.conv_block(self.pos_emb(x), conv_mask)
        h = self.drop(self.norm_1(feats))
        residual = self.drop(attend(self.query(h), self.key(h), self.value(h), mask, mask, self.num_heads,
                                    self.drop)) + feats
        return self.drop(self.dense(self.drop(self.norm_2(residual)))) + residual


class ConditionedPredictor(nn.Module):
    """End features are the shared encoder applied to the start features; each head sees its
    features (layer-normed) concatenated with the predictor's input."""

    def __init__(self, cfg: SeqPANConfig):
        super().__init__()
        self.encoder = FeatureEncoder(cfg)
        self.start_norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.end_norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.start_hidden = nn.Linear(2 * cfg.dim, cfg.dim)
        self.end_hidden = nn.Linear(2 * cfg.dim, cfg.dim)
        self.start_dense = nn.Linear(cfg.dim, 1)
        self.end_dense = nn.Linear(cfg.dim, 1)

    def logits(self, x: torch.Tensor, mask: torch.Tensor,
               conv_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Unmasked start and end logits, [B, N] each."""
        start = self.encoder(x, mask, conv_mask)
        end = self.encoder(start, mask, conv_mask)
        start = torch.relu(self.start_hidden(torch.cat([self.start_norm(start), x], dim=-1)))
        end = torch.relu(self.end_hidden(torch.cat([self.end_norm(end), x], dim=-1)))
        return self.start_dense(start).squeeze(-1), self.end_dense(end).squeeze(-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, conv_mask: torch.Tensor | None) -> LocalizerOutput:
        """Logits and the decoded span: the whole localizer, the unit the fast paths replace."""
        start_logits, end_logits = self.logits(x, mask, conv_mask)
        return LocalizerOutput(start_logits, end_logits, *self.decode(start_logits, end_logits, mask))

    @staticmethod
    def decode(start_logits: torch.Tensor, end_logits: torch.Tensor,
               mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Span decoding of the logits (`decode_span`); a fast path may swap in its own kernel."""
        return decode_span(start_logits, end_logits, mask)


def decode_span(start_logits: torch.Tensor, end_logits: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The original's span decoding in O(N): (start_index, end_index, joint probability).

    With P = triu(p_start ⊗ p_end), start = first argmax_i max_j P[i, j] and end = first
    argmax_j max_i P[i, j]. Rounding is monotone, so max_j≥i p_s(i)·p_e(j) equals
    p_s(i)·max_j≥i p_e(j) exactly: suffix and prefix maxima replace the N×N matrix.
    """
    p_start = torch.softmax(mask_logits(start_logits, mask), dim=1)
    p_end = torch.softmax(mask_logits(end_logits, mask), dim=1)
    suffix_max_end = torch.flip(torch.cummax(torch.flip(p_end, [1]), dim=1).values, [1])
    prefix_max_start = torch.cummax(p_start, dim=1).values
    start_index = torch.argmax(p_start * suffix_max_end, dim=1)
    end_index = torch.argmax(p_end * prefix_max_start, dim=1)
    score = p_start.gather(1, start_index[:, None]).squeeze(1) * p_end.gather(1, end_index[:, None]).squeeze(1)
    return start_index, end_index, score
