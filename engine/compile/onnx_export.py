"""The localizer (conditioned predictor + span decoding) as one ONNX graph: export, metadata, reading back.

The graph takes `x` [B, N, dim], `mask` [B, N] and `conv_mask` [B, N] (both bool) with dynamic B
and N (N at most the model's max_pos_len: longer inputs fail at the position embedding) and
returns the five LocalizerOutput fields. `isolated` padding feeds conv_mask = mask; `batch`
padding feeds an all-True conv_mask, which is exact: the conv block's `h * 1.0` is `h`.
"""
from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from reference.errors import SeqPANError
from reference.localizer import ConditionedPredictor, LocalizerOutput
from reference.model import SeqPAN
from reference.precision import dtype_name

from ..io.atomic import write_atomically
from ..io.checkpoint import weights_hash

if TYPE_CHECKING:
    import onnx

GRAPH_VERSION = "1"  # bump when the exported graph's inputs, outputs or semantics change
OPSET = 18
INPUT_NAMES = ("x", "mask", "conv_mask")
OUTPUT_NAMES = LocalizerOutput._fields
META_WEIGHTS = "seqpan.weights_hash"
META_GRAPH = "seqpan.graph_version"
META_DTYPE = "seqpan.dtype"
TRACE_MAX_LEN = 1024  # clips a traced graph takes at most (its cummax scan depth), unless a model needs more
_TABLE = "predictor.encoder.pos_emb.table"
_KEPT = 4
_traced: dict[tuple, bytes] = {}  # structure -> traced graph with placeholder weights
_exports: dict[tuple[str, torch.dtype], bytes] = {}  # (weights hash, dtype) -> finished graph


class LocalizerOnnxError(SeqPANError, ValueError):
    """ONNX support is not installed, or an ONNX file is unreadable, not a localizer export, or from
    another checkpoint."""


def require_onnx():
    """The `onnx` module, once onnx and onnxscript (the exporter's) are known to import."""
    try:
        import onnx
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise LocalizerOnnxError(f"ONNX export needs the onnx and onnxscript packages ({err}); "
                                 f"pip install 'seqpan[onnx]'") from None
    return onnx


class _LocalizerGraph(nn.Module):
    """The predictor with a plain tuple output, as the exporter wants it."""

    def __init__(self, predictor: ConditionedPredictor):
        super().__init__()
        self.predictor = predictor

    def forward(self, x: torch.Tensor, mask: torch.Tensor, conv_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.predictor(x, mask, conv_mask))


def cummax_translation(max_len: int):
    """An ONNX lowering of `aten.cummax` (which has none) for floating inputs at most `max_len` long.

    A Hillis-Steele scan of ceil(log2(max_len)) steps: each step compares every element with
    the running result `shift` positions earlier (padded with -inf) and keeps the later one when it
    is >= or NaN, exactly torch's rule, so values and indices match torch bit for bit.
    """
    import onnx
    from onnxscript import opset18 as op

    shifts = [1 << k for k in range(max(1, max_len - 1).bit_length())]

    def cummax(x, dim: int):
        rank = len(x.shape)
        dim %= rank
        axis = op.Constant(value_ints=[dim])
        start, length = op.Constant(value_ints=[0]), op.Gather(op.Shape(x), axis, axis=0)
        ones = op.ConstantOfShape(op.Shape(x), value=onnx.helper.make_tensor("one", onnx.TensorProto.INT64, [1], [1]))
        index = op.Sub(op.CumSum(ones, op.Constant(value_int=dim)), op.Constant(value_int=1))
        lowest = op.CastLike(op.Constant(value_float=float("-inf")), x)
        for shift in shifts:
            pads = op.Constant(value_ints=[shift if i == dim else 0 for i in range(rank)] + [0] * rank)
            earlier = op.Slice(op.Pad(x, pads, lowest), start, length, axis)
            earlier_index = op.Slice(op.Pad(index, pads, op.Constant(value_int=0)), start, length, axis)
            keep = op.Or(op.GreaterOrEqual(x, earlier), op.IsNaN(x))
            x, index = op.Where(keep, x, earlier), op.Where(keep, index, earlier_index)
        return x, index

    return cummax


def _trace(predictor: ConditionedPredictor, dtype: torch.dtype, max_len: int) -> bytes:
    """Trace the predictor with torch.onnx (dynamo) into a graph with dynamic batch and length up to
    `max_len`, its weights left as initializers named by parameter path (no folding)."""
    predictor = copy.deepcopy(predictor).to(device="cpu", dtype=dtype).eval()
    dim = predictor.encoder.pos_emb.table.shape[1]
    predictor.encoder.pos_emb.table = nn.Parameter(torch.zeros(max_len, dim, dtype=dtype))  # rows to trace with
    x, mask = torch.zeros(2, 8, dim, dtype=dtype), torch.ones(2, 8, dtype=torch.bool)
    conv_mask = mask.clone()  # a distinct tensor: the tracer would merge two uses of one input
    axes = {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("length", min=1, max=max_len)}
    return dynamo_export(_LocalizerGraph(predictor), (x, mask, conv_mask), INPUT_NAMES, OUTPUT_NAMES, (axes, axes, axes),
                         max_len, optimize=False)


def dynamo_export(module: nn.Module, example: tuple, input_names, output_names, dynamic_shapes, max_len: int,
                  optimize: bool = True) -> bytes:
    """`module` through torch.onnx.export(dynamo=True) at OPSET, quietly, with `aten.cummax` lowered for
    inputs at most `max_len` long; the serialized ONNX model."""
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, example, dynamo=True, opset_version=OPSET, verbose=False, optimize=optimize,
                input_names=list(input_names), output_names=list(output_names), dynamic_shapes=dynamic_shapes,
                custom_translation_table={torch.ops.aten.cummax.default: cummax_translation(max_len)})
    finally:
        quiet.setLevel(level)
    return program.model_proto.SerializeToString()


def _structure(weights: dict[str, torch.Tensor], num_heads: int, dtype: torch.dtype) -> tuple:
    """What a traced graph depends on: everything but the weights' values and the position table's rows."""
    max_len = max(TRACE_MAX_LEN, weights[_TABLE].shape[0])
    return dtype, num_heads, max_len, tuple((k, tuple(v.shape)) for k, v in weights.items() if k != _TABLE)


def localizer_onnx(model: SeqPAN, dtype: torch.dtype = torch.float32) -> onnx.ModelProto:
    """`model`'s localizer as ONNX in `dtype`, constant-folded, with the weights hash in its metadata.

    Tracing takes many seconds, so one traced graph serves every model of the same structure: it
    is kept in memory and given each model's weights (the position table may be shorter than the
    traced one: the graph slices it to the input's length). The last few results are kept too.
    """
    onnx = require_onnx()
    import onnxscript

    digest = weights_hash(model)
    if (digest, dtype) not in _exports:
        weights = _LocalizerGraph(model.predictor).state_dict()
        structure = _structure(weights, model.predictor.encoder.num_heads, dtype)
        if structure not in _traced:
            _traced[structure] = _trace(model.predictor, dtype, structure[2])
        proto = onnx.load_from_string(_traced[structure])
        initializers = {init.name: init for init in proto.graph.initializer}
        for name, value in weights.items():
            value = value.detach().to("cpu", dtype).contiguous()
            initializers[name].CopyFrom(onnx.helper.make_tensor(
                name, initializers[name].data_type, value.shape, value.view(torch.uint8).numpy().tobytes(), raw=True))
        del proto.graph.value_info[:]  # traced with the placeholder table's shape; the optimizer re-infers
        proto = onnxscript.optimizer.optimize(proto)
        onnx.helper.set_model_props(proto, {META_WEIGHTS: digest, META_GRAPH: GRAPH_VERSION,
                                            META_DTYPE: dtype_name(dtype)})
        _exports[(digest, dtype)] = proto.SerializeToString()
        for cache in (_traced, _exports):
            while len(cache) > _KEPT:
                cache.pop(next(iter(cache)))
    return onnx.load_from_string(_exports[(digest, dtype)])


def export_localizer(model: SeqPAN, path: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write `model`'s localizer to `path` as ONNX (atomically)."""
    path = Path(path)
    proto = localizer_onnx(model, dtype)
    write_atomically(path, lambda tmp: require_onnx().save(proto, tmp))
    return path


def onnx_metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def read_localizer_onnx(path: str | Path, model: SeqPAN) -> onnx.ModelProto:
    """Load an exported localizer, refusing one exported from other weights or by another graph version."""
    onnx = require_onnx()
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise LocalizerOnnxError(f"ONNX file not found: {path}")
    try:
        proto = onnx.load(str(path))
    except (DecodeError, OSError, ValueError) as err:
        raise LocalizerOnnxError(f"{path} is not a readable ONNX file: {err}") from None
    meta = onnx_metadata(proto)
    if META_WEIGHTS not in meta:
        raise LocalizerOnnxError(f"{path} is not a seqpan localizer export (no {META_WEIGHTS} metadata)")
    if meta.get(META_GRAPH) != GRAPH_VERSION:
        raise LocalizerOnnxError(f"{path} holds localizer graph version {meta.get(META_GRAPH)!r}, this engine "
                                 f"needs {GRAPH_VERSION!r}: re-export it with `seqpan export-onnx`")
    expected = weights_hash(model)
    if meta[META_WEIGHTS] != expected:
        raise LocalizerOnnxError(f"{path} was exported from other weights ({meta[META_WEIGHTS][:12]}…), not "
                                 f"from this checkpoint ({expected[:12]}…): re-export it with `seqpan export-onnx`")
    return proto
