"""Query embedding (frozen word vectors + char CNN) and the projections of both modalities."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import SeqPANConfig

MIN_CHAR_WIDTH = 4  # the widest char kernel reads 4 characters (VALID padding)


class WordEmbedding(nn.Module):
    """Rows 0 (PAD, zeros) and 1 (UNK, trained) before the frozen pre-trained table."""

    def __init__(self, cfg: SeqPANConfig):
        super().__init__()
        self.unk = nn.Parameter(torch.zeros(1, cfg.word_dim))
        self.register_buffer("table", torch.zeros(cfg.num_words - 2, cfg.word_dim))

    def forward(self, word_ids: torch.Tensor) -> torch.Tensor:
        pad = torch.zeros_like(self.unk)
        return F.embedding(word_ids, torch.cat([pad, self.unk, self.table], dim=0))


class CharCNN(nn.Module):
    """Char embeddings (row 0 = PAD, zeros), width-k VALID convolutions, ReLU, max over positions."""

    def __init__(self, cfg: SeqPANConfig):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(cfg.num_chars - 1, cfg.char_dim))
        self.convs = nn.ModuleList(nn.Conv1d(cfg.char_dim, ch, k) for k, ch in zip(cfg.char_kernels, cfg.char_filters))
        self.drop = nn.Dropout(cfg.drop_rate)

    def forward(self, char_ids: torch.Tensor, char_width: torch.Tensor | None = None) -> torch.Tensor:
        """char_ids [B, M, W] -> [B, M, sum(filters)].

        With `char_width` ([B] ints), window positions reaching past a sample's own width are
        left out of the max, as if that sample's chars had been padded to that width only.
        """
        b, m, w = char_ids.shape
        table = torch.cat([torch.zeros_like(self.table[:1]), self.table], dim=0)
        emb = self.drop(F.embedding(char_ids, table)).reshape(b * m, w, -1).transpose(1, 2)
        outputs = []
        for conv in self.convs:
            k = conv.kernel_size[0]
            out = torch.relu(conv(emb)).reshape(b, m, conv.out_channels, w - k + 1)
            if char_width is not None:
                valid = torch.arange(w - k + 1, device=out.device)[None, :] <= (char_width[:, None] - k)
                out = out.masked_fill(~valid[:, None, None, :], 0.0)  # ReLU outputs are >= 0
            outputs.append(out.amax(dim=-1))
        return torch.cat(outputs, dim=-1)


def sample_char_width(char_ids: torch.Tensor) -> torch.Tensor:
    """Per sample: max(4, its longest word), the char width it would have if batched alone."""
    longest = (char_ids != 0).sum(dim=-1).amax(dim=-1)
    return longest.clamp(min=MIN_CHAR_WIDTH)


class QueryEncoder(nn.Module):
    """Words + chars -> dense to `dim` -> layer norm."""

    def __init__(self, cfg: SeqPANConfig):
        super().__init__()
        self.words = WordEmbedding(cfg)
        self.chars = CharCNN(cfg)
        self.proj = nn.Linear(cfg.word_dim + cfg.char_out_dim, cfg.dim)
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.drop = nn.Dropout(cfg.drop_rate)

    def forward(self, word_ids: torch.Tensor | None, char_ids: torch.Tensor, char_width: torch.Tensor | None,
                word_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """`word_vectors` [B, M, word_dim], when given, are the word table's rows for `word_ids` looked
        up by the caller (a compiled stage takes them so as not to hold the whole table)."""
        words = self.words(word_ids) if word_vectors is None else word_vectors
        feats = torch.cat([self.drop(words), self.chars(char_ids, char_width)], -1)
        return self.norm(self.proj(feats))


class VideoEncoder(nn.Module):
    """Clip features -> dense to `dim` -> layer norm."""

    def __init__(self, cfg: SeqPANConfig):
        super().__init__()
        self.proj = nn.Linear(cfg.visual_dim, cfg.dim)
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.drop = nn.Dropout(cfg.drop_rate)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(self.drop(video)))


class PositionEmbedding(nn.Module):
    """Learned absolute positions added to a sequence (at most max_pos_len long)."""

    def __init__(self, cfg: SeqPANConfig):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(cfg.max_pos_len, cfg.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        if n > self.table.shape[0]:
            raise ValueError(f"sequence of {n} positions exceeds max_pos_len {self.table.shape[0]}")
        return x + self.table[:n]
