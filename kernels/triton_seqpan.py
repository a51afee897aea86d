"""The `triton` backend: the reference SeqPAN with its blocks swapped for the fused kernels."""
from __future__ import annotations

import copy

import torch
from torch import nn

from reference.localizer import ConditionedPredictor, LocalizerOutput
from reference.model import SeqPAN
from reference.precision import PRECISIONS

from .common import PackedWeights
from .conv_block import FusedConvBlock
from .cqa import FusedCQA, FusedPoolConcat
from .sgpa import FusedSGPALayer
from .span import decode_span


class FusedSpanPredictor(nn.Module):
    """A `ConditionedPredictor` whose span decoding is the fused kernel (its logits are unchanged)."""

    def __init__(self, predictor: ConditionedPredictor):
        super().__init__()
        self.predictor = predictor

    def logits(self, x: torch.Tensor, mask: torch.Tensor,
               conv_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.predictor.logits(x, mask, conv_mask)

    @staticmethod
    def decode(start_logits: torch.Tensor, end_logits: torch.Tensor,
               mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return decode_span(start_logits, end_logits, mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, conv_mask: torch.Tensor | None) -> LocalizerOutput:
        start_logits, end_logits = self.logits(x, mask, conv_mask)
        return LocalizerOutput(start_logits, end_logits, *self.decode(start_logits, end_logits, mask))


def triton_seqpan(model: SeqPAN, precision: str = "fp32", conv: dict | None = None, sgpa: dict | None = None,
                  cqa: dict | None = None, pool: dict | None = None) -> SeqPAN:
    """The `triton` backend (inference only): a deep copy of `model` cast to the precision's dtype
    (fp32 with IEEE dots, tf32, bf16 or fp16), its conv blocks (the shared one and the
    predictor's), SGPA layers, both CQA blocks, pool-concat and span decoding swapped for kernel
    modules holding the same parameters. Still a SeqPAN: forward, encode_video, encode_query and
    ground_encoded all work; video features of another dtype are cast on entry. Its attribute
    `packed_weights` lists the kernels' packed weight copies (see engine.cuda_graphs).

    conv, sgpa, cqa, pool: keyword options of the kernel modules (block sizes, num_warps, ...).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype, tf32 = PRECISIONS[precision].dtype, PRECISIONS[precision].dot == "tf32"
    m = copy.deepcopy(model).eval().to(dtype)
    m.video_encoder.register_forward_pre_hook(lambda module, args: (args[0].to(dtype), *args[1:]))
    m.conv_block = FusedConvBlock(m.conv_block, tf32, **(conv or {}))
    m.predictor.encoder.conv_block = FusedConvBlock(m.predictor.encoder.conv_block, tf32, **(conv or {}))
    m.sgpa = nn.ModuleList(FusedSGPALayer(layer, tf32, **(sgpa or {})) for layer in m.sgpa)
    m.q2v = FusedCQA(m.q2v, tf32, **(cqa or {}))
    m.v2q = FusedCQA(m.v2q, tf32, **(cqa or {}))
    m.cq_concat = FusedPoolConcat(m.cq_concat, tf32, **(pool or {}))
    m.predictor = FusedSpanPredictor(m.predictor)
    # what CUDA graphs must follow: when any of these is rebuilt, graphs captured before read freed copies
    m.packed_weights = [mod.packed for mod in m.modules() if isinstance(getattr(mod, "packed", None), PackedWeights)]
    return m
