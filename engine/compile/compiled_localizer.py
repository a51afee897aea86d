"""The localizer without TensorRT: torch.compile replayed from one CUDA graph per bucketed shape, and
`make_localizer`, which takes TensorRT when it imports and works and this fallback otherwise.

Shapes are bucketed so that few graphs serve every request: the batch is padded to a power of two
(samples never interact, so no answer changes, in either padding mode) and, in `isolated` padding
only, the length to its bucket (padded clips are masked out of every conv and attention there; in
`batch` padding they would be read, so the length stays as given). Outputs are cropped back; as in
the reference, only logits at valid positions are meaningful.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from reference.localizer import ConditionedPredictor, LocalizerOutput
from reference.model import SeqPAN
from reference.ops import weights_device

from ..buckets import batch_bucket, length_buckets
from ..cuda_graphs import GraphCache
from .trt import TrtError, precision_of, trt_localizer

PREFERENCES = ("auto", "tensorrt", "compiled", "eager")
log = logging.getLogger(__name__)


def bucket_shape(batch: int, length: int, isolated: bool, max_pos_len: int) -> tuple[int, int]:
    """The (batch, length) a request runs at: batch to the next power of two; length to its bucket
    when `isolated`, unchanged otherwise."""
    if not 1 <= length <= max_pos_len:
        raise ValueError(f"length {length} is outside 1..{max_pos_len}")
    padded_batch = batch_bucket(batch)
    if not isolated:
        return padded_batch, length
    return padded_batch, next(b for b in length_buckets(max_pos_len) if b >= length)


def pad_inputs(x: torch.Tensor, mask: torch.Tensor, conv_mask: torch.Tensor | None, batch: int,
               length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Zero-pad x and False-pad the masks to [batch, length]."""
    grow_b, grow_n = batch - mask.shape[0], length - mask.shape[1]
    if grow_b == grow_n == 0:
        return x, mask, conv_mask
    x = F.pad(x, (0, 0, 0, grow_n, 0, grow_b))
    mask = F.pad(mask, (0, grow_n, 0, grow_b), value=False)
    return x, mask, None if conv_mask is None else F.pad(conv_mask, (0, grow_n, 0, grow_b), value=False)


def crop_output(out: LocalizerOutput, batch: int, length: int) -> LocalizerOutput:
    return LocalizerOutput(out.start_logits[:batch, :length], out.end_logits[:batch, :length],
                           out.start_index[:batch], out.end_index[:batch], out.score[:batch])


class CompiledLocalizer(nn.Module):
    """ConditionedPredictor on bucketed shapes, optionally torch.compile'd and, on CUDA, replayed
    from one CUDA graph per (batch, length, padding, dtype); the `max_graphs` latest are kept."""

    def __init__(self, predictor: ConditionedPredictor, torch_compile: bool = True, cuda_graphs: bool = True,
                 max_graphs: int = 64):
        super().__init__()
        self.predictor = predictor
        self.max_pos_len = predictor.encoder.pos_emb.table.shape[0]
        # dynamic: one compilation serves every bucket (a graph per shape is captured from it)
        self.fn = torch.compile(predictor.forward, dynamic=True) if torch_compile else predictor.forward
        self.cuda_graphs = cuda_graphs
        self.graphs = GraphCache(self.fn, max_graphs, warmup=3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, conv_mask: torch.Tensor | None) -> LocalizerOutput:
        batch, length = mask.shape
        shape = bucket_shape(batch, length, conv_mask is not None, self.max_pos_len)
        inputs = pad_inputs(x, mask, conv_mask, *shape)
        with torch.no_grad():
            out = LocalizerOutput(*self.graphs(*inputs)) if self.cuda_graphs and x.is_cuda else self.fn(*inputs)
        return crop_output(out, batch, length)


def make_localizer(model: SeqPAN, prefer: str = "auto", **trt_options) -> tuple[nn.Module, str]:
    """The fastest localizer available for `model`, called like its predictor, and its name.

    "auto": TensorRT for a CUDA model when `tensorrt` imports and the engine builds (or is cached),
    else torch.compile + CUDA graphs on CUDA, else the eager predictor. "tensorrt" raises TrtError
    instead of falling back; "compiled" and "eager" force those. `trt_options` go to `trt_localizer`.
    """
    if prefer not in PREFERENCES:
        raise ValueError(f"prefer must be one of {PREFERENCES}, got {prefer!r}")
    cuda = weights_device(model).type == "cuda"
    if prefer == "tensorrt" and not cuda:
        raise TrtError("the TensorRT localizer needs the model on a CUDA device")
    if prefer == "tensorrt" or (prefer == "auto" and cuda):
        try:
            precision = trt_options.pop("precision", None) or precision_of(model)
            return trt_localizer(model, precision, **trt_options), f"tensorrt-{precision}"
        except Exception as err:  # not installed, no GPU, unsupported dtype, parse or build failure
            if prefer == "tensorrt":
                raise
            log.log(logging.INFO if isinstance(err, TrtError) else logging.WARNING,
                    "localizer: TensorRT unusable (%s), falling back", err)
    if prefer == "compiled" or (prefer == "auto" and cuda):
        name = "torch.compile+cuda-graph" if cuda else "torch.compile"
        return CompiledLocalizer(model.predictor, torch_compile=True, cuda_graphs=cuda), name
    return model.predictor, "eager"
