"""The original's two training losses."""
from __future__ import annotations

import torch

from .ops import mask_logits


def localization_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, y_start: torch.Tensor,
                      y_end: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the soft-label cross-entropies of the masked start and end logits."""
    def xent(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return -(labels * torch.log_softmax(mask_logits(logits, mask), dim=1)).sum(dim=1)
    return (xent(start_logits, y_start) + xent(end_logits, y_end)).mean()


def matching_loss(match_logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                  label_emb: torch.Tensor) -> torch.Tensor:
    """Masked mean cross-entropy of the tempered matching logits against BIEO labels, plus the
    Frobenius norm of the label embeddings' off-diagonal Gram matrix (orthogonality term)."""
    log_probs = torch.log_softmax(match_logits, dim=-1)
    per_clip = -log_probs.gather(-1, labels.long()[..., None]).squeeze(-1)
    m = mask.to(match_logits.dtype)
    xent = (per_clip * m).sum() / (m.sum() + 1e-12)
    gram = label_emb @ label_emb.T
    off_diag = gram * (1.0 - torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device))
    return xent + torch.linalg.vector_norm(off_diag)
