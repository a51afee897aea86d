"""Sequence matching: per-clip BIEO label logits, Gumbel-softmax, soft label embeddings."""
from __future__ import annotations

import torch
from torch import nn

from .config import SeqPANConfig

NUM_LABELS = 4  # O, B-M, I-M, E-M


class SequenceMatcher(nn.Module):
    """Predicts a label distribution per clip and adds the expected label embedding.

    As in the authors' code the soft probabilities softmax((logits + g) / tau) weight the label
    embeddings (not a hard one-hot); g is the Gumbel noise, zero unless the caller gives it.
    """

    def __init__(self, cfg: SeqPANConfig):
        super().__init__()
        self.tau = cfg.tau
        self.dense = nn.Linear(cfg.dim, NUM_LABELS)
        self.label_emb = nn.Parameter(torch.zeros(NUM_LABELS, cfg.dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (tempered logits (logits + g) / tau [B, N, 4], masked features [B, N, D])."""
        logits = self.dense(x)
        if noise is not None:
            logits = logits + noise
        logits = logits / self.tau
        probs = torch.softmax(logits, dim=-1)
        return logits, (x + probs @ self.label_emb) * mask[..., None].to(x.dtype)


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """-log(-log(u + 1e-20) + 1e-20), u ~ U(0, 1): the original's Gumbel(0, 1) sampler."""
    u = torch.rand(shape, generator=generator, dtype=dtype)
    return -torch.log(-torch.log(u + 1e-20) + 1e-20)
