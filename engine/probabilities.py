"""The start and end probabilities over a request's clips, for looking at an answer (`seqpan ground
--plot`): the reference model run on the request alone, as the engine's answer is defined."""
from __future__ import annotations

import numpy as np
import torch

from reference.model import SeqPAN

from .prepare import Prepared


def span_probabilities(model: SeqPAN, prepared: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """(p_start, p_end), each [clips] float64 summing to 1, over the request's clips after down-sampling:
    the softmax of the reference model's start and end logits (isolated padding, the request's
    Gumbel noise), from which the engine's moment and top-k spans are decoded."""
    words = prepared.query.length
    chars = prepared.query.char_ids[None, :words]
    video = prepared.features[None].to(torch.float32)
    noise = None if prepared.noise is None else prepared.noise[None]
    model = model.eval().float()
    with torch.inference_mode():
        out = model(video, torch.tensor([video.shape[1]]), prepared.query.word_ids[None, :words], chars,
                    padding="isolated", gumbel_noise=noise)
    return tuple(torch.softmax(logits[0].double(), dim=0).numpy() for logits in (out.start_logits, out.end_logits))
