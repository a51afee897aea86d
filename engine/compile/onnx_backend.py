"""The `onnx` backend: the reference, with its localizer run by onnxruntime from the ONNX export."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from reference.localizer import LocalizerOutput, decode_span
from reference.model import SeqPAN
from reference.ops import weights_dtype
from reference.precision import dtype_name

from ..errors import BackendError
from .onnx_export import META_DTYPE, OUTPUT_NAMES, LocalizerOnnxError, localizer_onnx, onnx_metadata, require_onnx

if TYPE_CHECKING:
    import onnx


class OrtLocalizer(nn.Module):
    """An exported localizer run by onnxruntime on CPU, called like ConditionedPredictor."""

    def __init__(self, proto: onnx.ModelProto):
        super().__init__()
        import onnxruntime

        self.dtype = getattr(torch, onnx_metadata(proto)[META_DTYPE])
        options = onnxruntime.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting between calls
        self.session = onnxruntime.InferenceSession(proto.SerializeToString(), options,
                                                    providers=["CPUExecutionProvider"])

    def logits(self, x: torch.Tensor, mask: torch.Tensor,
               conv_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The export's start and end logits (its decoded span left unused)."""
        return tuple(self(x, mask, conv_mask)[:2])

    decode = staticmethod(decode_span)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, conv_mask: torch.Tensor | None) -> LocalizerOutput:
        conv_mask = torch.ones_like(mask) if conv_mask is None else conv_mask
        feeds = {"x": x.detach().to("cpu", self.dtype), "mask": mask.cpu(), "conv_mask": conv_mask.cpu()}
        outputs = self.session.run(list(OUTPUT_NAMES), {k: v.numpy() for k, v in feeds.items()})
        start_logits, end_logits, start_index, end_index, score = (torch.from_numpy(o).to(x.device) for o in outputs)
        return LocalizerOutput(start_logits.to(x.dtype), end_logits.to(x.dtype), start_index, end_index,
                               score.to(x.dtype))


class LocalizedSeqPAN(SeqPAN):
    """A SeqPAN sharing another's modules, with its localizer replaced by a fast one."""

    def __init__(self, model: SeqPAN, localizer: nn.Module):
        nn.Module.__init__(self)
        self.cfg = model.cfg
        for name, child in model.named_children():
            setattr(self, name, localizer if name == "predictor" else child)


def onnx_seqpan(model: SeqPAN, precision: str = "fp32") -> nn.Module:
    """The `onnx` backend: the reference, except the localizer, which onnxruntime runs from its ONNX export."""
    if precision != "fp32":
        raise BackendError(f"the onnx backend runs fp32 only (onnxruntime's CPU kernels), not {precision}")
    try:
        require_onnx()
        import onnxruntime  # noqa: F401
    except (ImportError, LocalizerOnnxError) as err:
        raise BackendError(f"backend 'onnx' is unavailable: {err}") from None
    dtype = weights_dtype(model)
    if dtype != torch.float32:
        raise BackendError(f"the onnx backend runs float32 only (onnxruntime's CPU kernels), got {dtype_name(dtype)}")
    return LocalizedSeqPAN(model, OrtLocalizer(localizer_onnx(model)))
