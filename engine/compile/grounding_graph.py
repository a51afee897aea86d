"""The engine's whole forward as one traceable module, for exporting to a CPU runtime.

Inputs: `video` [U, N, visual_dim] (the unique videos), `video_len` [U], `video_index` [B] (the
video of each query), `word_ids` [B, M], `word_vectors` [B, M, word_dim] (the word table's rows for
them, looked up outside, so that a large vocabulary is not compiled into every shape's model),
`char_ids` [B, M, W], `noise` [B, N, 4] (Gumbel noise, zeros for none). Outputs: start and end logits [B, N], match logits [B, N, 4], start and end
index [B] and score [B]. `padding` is fixed when the module is built, as in the engine: each
video is encoded once, then gathered for its queries.
"""
from __future__ import annotations

import torch
from torch import nn

from reference.embedding import sample_char_width
from reference.model import SeqPAN
from reference.ops import check_padding, length_mask, mask_logits

INPUT_NAMES = ("video", "video_len", "video_index", "word_ids", "word_vectors", "char_ids", "noise")
OUTPUT_NAMES = ("start_logits", "end_logits", "match_logits", "start_index", "end_index", "score")


def running_max(x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Prefix maxima along dim 1 (suffix maxima when `reverse`) of a non-negative [B, N] tensor: the
    values of torch.cummax exactly (a max of masked copies; zeros are neutral for non-negative
    inputs), with no op whose count or size depends on N, so one trace serves every length."""
    position = torch.arange(x.shape[1], device=x.device)
    upto = position[None, :] >= position[:, None] if reverse else position[None, :] <= position[:, None]
    return (x[:, None, :] * upto.to(x.dtype)).amax(dim=-1)


def decode_span_graph(start_logits: torch.Tensor, end_logits: torch.Tensor,
                      mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """reference.localizer.decode_span with the running maxima as shift-and-max steps."""
    p_start = torch.softmax(mask_logits(start_logits, mask), dim=1)
    p_end = torch.softmax(mask_logits(end_logits, mask), dim=1)
    start_index = torch.argmax(p_start * running_max(p_end, reverse=True), dim=1)
    end_index = torch.argmax(p_end * running_max(p_start), dim=1)
    score = p_start.gather(1, start_index[:, None]).squeeze(1) * p_end.gather(1, end_index[:, None]).squeeze(1)
    return start_index, end_index, score


class GroundingGraph(nn.Module):
    """SeqPAN's forward over unique videos and gathered queries, with plain tensor outputs."""

    def __init__(self, model: SeqPAN, padding: str = "isolated"):
        super().__init__()
        check_padding(padding)
        self.model, self.padding = model, padding

    def forward(self, video: torch.Tensor, video_len: torch.Tensor, video_index: torch.Tensor, word_ids: torch.Tensor,
                word_vectors: torch.Tensor, char_ids: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
        model, padding = self.model, self.padding
        isolated = padding == "isolated"
        video_mask = length_mask(video_len, video.shape[1])
        v = model.encode_video(video, video_mask, padding)[video_index]
        v_mask = video_mask[video_index]
        q_mask = word_ids != 0
        # SeqPAN.encode_query, with the word vectors given
        encoder = model.query_encoder
        chars = encoder.chars(char_ids, sample_char_width(char_ids) if isolated else None)
        q = model.pos_emb(encoder.norm(encoder.proj(torch.cat([word_vectors, chars], -1))))
        q = model.conv_block(q, q_mask if isolated else None)
        for layer in model.sgpa:
            v, q = layer(v, q, v_mask, q_mask), layer(q, v, q_mask, v_mask)
        q2v, _ = model.q2v(v, q, v_mask, q_mask)
        v2q, _ = model.v2q(q, v, q_mask, v_mask)
        match_logits, feats = model.matcher(model.cq_concat(q2v, v2q, q_mask), v_mask, noise)
        start_logits, end_logits = model.predictor.logits(feats, v_mask, v_mask if isolated else None)
        return (start_logits, end_logits, match_logits, *decode_span_graph(start_logits, end_logits, v_mask))
