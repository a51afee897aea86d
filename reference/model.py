"""SeqPAN wired together: the plain PyTorch reference every fast path is compared with."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .config import SeqPANConfig
from .conv_block import ConvBlock
from .cqa import ContextQueryAttention, PoolConcat
from .embedding import PositionEmbedding, QueryEncoder, VideoEncoder, sample_char_width
from .localizer import ConditionedPredictor
from .matching import SequenceMatcher
from .ops import check_padding, length_mask
from .sgpa import SGPALayer

Recorder = Callable[[str, torch.Tensor], None]


def _ignore(name: str, value: torch.Tensor) -> None:
    """A Recorder that keeps nothing."""


@dataclass
class SeqPANOutput:
    start_logits: torch.Tensor  # [B, N], unmasked
    end_logits: torch.Tensor  # [B, N], unmasked
    match_logits: torch.Tensor  # [B, N, 4], (logits + noise) / tau
    start_index: torch.Tensor  # [B]
    end_index: torch.Tensor  # [B]
    score: torch.Tensor  # [B], p_start(start) * p_end(end)
    video_mask: torch.Tensor  # [B, N] bool


@dataclass
class SeqPANInputs:
    """One padded batch, cut to its longest video and query."""
    video: torch.Tensor  # [B, N, visual_dim]
    video_len: torch.Tensor  # [B]
    word_ids: torch.Tensor  # [B, M]
    char_ids: torch.Tensor  # [B, M, W]
    video_mask: torch.Tensor  # [B, N] bool
    query_mask: torch.Tensor  # [B, M] bool


def prepare_inputs(video: torch.Tensor, video_len: torch.Tensor, word_ids: torch.Tensor,
                   char_ids: torch.Tensor, visual_dim: int) -> SeqPANInputs:
    """Validate shapes, lengths and values, cut padding past the longest video and query, build masks."""
    if video.dim() != 3 or word_ids.dim() != 2 or char_ids.dim() != 3 or video_len.dim() != 1:
        raise ValueError("expected video [B, N, D], video_len [B], word_ids [B, M], char_ids [B, M, W]")
    if video.shape[-1] != visual_dim:
        raise ValueError(f"video features have dimension {video.shape[-1]}, the model expects {visual_dim}")
    b = video.shape[0]
    if not (video_len.shape[0] == word_ids.shape[0] == char_ids.shape[0] == b):
        raise ValueError("video, video_len, word_ids and char_ids disagree on the batch size")
    if char_ids.shape[1] != word_ids.shape[1]:
        raise ValueError(f"char_ids has {char_ids.shape[1]} words, word_ids {word_ids.shape[1]}")
    if b == 0:
        raise ValueError("empty batch")
    if int(video_len.min()) < 1 or int(video_len.max()) > video.shape[1]:
        raise ValueError(f"video lengths must lie in 1..{video.shape[1]}, got {video_len.tolist()}")
    query_len = (word_ids != 0).sum(dim=1)
    if int(query_len.min()) < 1:
        raise ValueError("every query needs at least one word")
    n, m = int(video_len.max()), int(query_len.max())
    video_mask = length_mask(video_len, n)
    video, word_ids, char_ids = video[:, :n], word_ids[:, :m], char_ids[:, :m]
    if not bool(torch.isfinite(video[video_mask]).all()):
        raise ValueError("video features contain NaN or inf")
    return SeqPANInputs(video, video_len, word_ids, char_ids, video_mask, word_ids != 0)


class SeqPAN(nn.Module):
    """Reference SeqPAN (Zhang et al., 2021), faithful to the authors' TensorFlow graph."""

    def __init__(self, cfg: SeqPANConfig):
        super().__init__()
        self.cfg = cfg
        self.query_encoder = QueryEncoder(cfg)
        self.video_encoder = VideoEncoder(cfg)
        self.pos_emb = PositionEmbedding(cfg)
        self.conv_block = ConvBlock(cfg)
        self.sgpa = nn.ModuleList(SGPALayer(cfg) for _ in range(cfg.attn_layer))
        self.q2v = ContextQueryAttention(cfg)
        self.v2q = ContextQueryAttention(cfg)
        self.cq_concat = PoolConcat(cfg)
        self.matcher = SequenceMatcher(cfg)
        self.predictor = ConditionedPredictor(cfg)

    def encode_video(self, video: torch.Tensor, video_mask: torch.Tensor, padding: str,
                     record: Recorder = _ignore) -> torch.Tensor:
        """The query-independent video path: projection, norm, positions, conv block."""
        v = self.pos_emb(self.video_encoder(video))
        record("add_pos_embs:pos_emb@0", v)
        return self.conv_block(v, video_mask if padding == "isolated" else None)

    def encode_query(self, word_ids: torch.Tensor | None, char_ids: torch.Tensor, query_mask: torch.Tensor,
                     padding: str, record: Recorder = _ignore, word_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """The video-independent query path: words + char CNN, projection, norm, positions, conv block.
        `word_vectors`, when given, stand for the word embedding of `word_ids` (then unused)."""
        isolated = padding == "isolated"
        char_width = sample_char_width(char_ids) if isolated else None
        q = self.pos_emb(self.query_encoder(word_ids, char_ids, char_width, word_vectors))
        record("add_pos_embs:pos_emb@1", q)
        return self.conv_block(q, query_mask if isolated else None)

    def forward(self, video: torch.Tensor, video_len: torch.Tensor, word_ids: torch.Tensor,
                char_ids: torch.Tensor, padding: str = "isolated", gumbel_noise: torch.Tensor | None = None,
                trace: dict[str, torch.Tensor] | None = None) -> SeqPANOutput:
        """Ground a padded batch.

        padding="batch" reproduces the original, whose convolutions read padded positions;
        "isolated" gives every sample the result it would get alone. `gumbel_noise` [B, N, 4]
        is added to the matching logits (none by default). `trace`, if given, collects the
        intermediates under the golden files' `mid/*` names.
        """
        check_padding(padding)
        inp = prepare_inputs(video, video_len, word_ids, char_ids, self.cfg.visual_dim)
        v_mask, q_mask = inp.video_mask, inp.query_mask
        record: Recorder = trace.__setitem__ if trace is not None else _ignore
        v = self.encode_video(inp.video, v_mask, padding, record)
        q = self.encode_query(inp.word_ids, inp.char_ids, q_mask, padding, record)
        return self.ground_encoded(v, q, v_mask, q_mask, padding, gumbel_noise, record)

    def ground_encoded(self, v: torch.Tensor, q: torch.Tensor, v_mask: torch.Tensor, q_mask: torch.Tensor,
                       padding: str = "isolated", gumbel_noise: torch.Tensor | None = None,
                       record: Recorder = _ignore) -> SeqPANOutput:
        """Everything after the two encoders: SGPA layers, CQA, fusion, matching, localizer, span decoding.

        Takes the outputs of `encode_video` [B, N, D] and `encode_query` [B, M, D], so a caller may
        encode a video once and reuse it for several queries.
        """
        start_logits, end_logits, match_logits = self.localize(v, q, v_mask, q_mask, padding, gumbel_noise, record)
        return SeqPANOutput(start_logits, end_logits, match_logits,
                            *self.predictor.decode(start_logits, end_logits, v_mask), v_mask)

    def localize(self, v: torch.Tensor, q: torch.Tensor, v_mask: torch.Tensor, q_mask: torch.Tensor,
                 padding: str = "isolated", gumbel_noise: torch.Tensor | None = None,
                 record: Recorder = _ignore) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`ground_encoded` up to the logits: (start_logits, end_logits, match_logits), before decoding."""
        record("conv_block:conv_block@0", v)
        record("conv_block:conv_block@1", q)
        for i, layer in enumerate(self.sgpa):
            v, q = layer(v, q, v_mask, q_mask), layer(q, v, q_mask, v_mask)
            record(f"dual_attn_block:d_attn_{i}@0", v)
            record(f"dual_attn_block:d_attn_{i}@1", q)
        q2v, q2v_score = self.q2v(v, q, v_mask, q_mask)
        v2q, v2q_score = self.v2q(q, v, q_mask, v_mask)
        record("cq_attention:q2v_attn#0@0", q2v)
        record("cq_attention:q2v_attn#1@0", q2v_score)
        record("cq_attention:v2q_attn#0@0", v2q)
        record("cq_attention:v2q_attn#1@0", v2q_score)
        fused = self.cq_concat(q2v, v2q, q_mask)
        record("cq_concat:cq_cat@0", fused)
        noise = None if gumbel_noise is None else gumbel_noise[:, : v_mask.shape[1]].to(fused.dtype)
        match_logits, feats = self.matcher(fused, v_mask, noise)
        start_logits, end_logits = self.predictor.logits(feats, v_mask, v_mask if padding == "isolated" else None)
        record("conditioned_predictor:predictor#0@0", start_logits)
        record("conditioned_predictor:predictor#1@0", end_logits)
        return start_logits, end_logits, match_logits
