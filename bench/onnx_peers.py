"""What a CPU user would build by hand instead of the engine: the whole model exported with
`torch.onnx.export(dynamo=True)` (dynamic batch, clips, words and chars; the project's cummax
translation) and run by onnxruntime or by OpenVINO on those dynamic shapes. (Made static at a
batch's shapes, this export crashes OpenVINO 2026.4's compile_model, a segmentation fault, on most
shapes: no static-shape peer.)

Both take the reference's inputs (video, video_len, word_ids, char_ids), one video per query, in
isolated padding, and return (start_index, end_index, score).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from engine.compile.onnx_export import dynamo_export
from reference.model import SeqPAN
from reference.ops import length_mask

PEERS = ("onnxruntime-dynamic", "openvino-dynamic")
INPUT_NAMES = ("video", "video_len", "word_ids", "char_ids")
_exports: dict[int, bytes] = {}  # id(model) -> its ONNX export (the bench keeps its models alive)


class WholeModel(nn.Module):
    """SeqPAN in isolated padding with plain tensor inputs and outputs, as an exporter wants it."""

    def __init__(self, model: SeqPAN):
        super().__init__()
        self.model = model

    def forward(self, video, video_len, word_ids, char_ids):
        model = self.model
        video_mask, query_mask = length_mask(video_len, video.shape[1]), word_ids != 0
        v = model.encode_video(video, video_mask, "isolated")
        q = model.encode_query(word_ids, char_ids, query_mask, "isolated")
        out = model.ground_encoded(v, q, video_mask, query_mask, "isolated")
        return out.start_index, out.end_index, out.score


def export_whole_model(model: SeqPAN) -> bytes:
    """`model` as one ONNX graph with every batch and length dimension dynamic (kept per model)."""
    if id(model) not in _exports:
        cfg = model.cfg
        example = (torch.randn(2, 6, cfg.visual_dim), torch.tensor([6, 4]), torch.randint(1, cfg.num_words, (2, 5)),
                   torch.randint(1, cfg.num_chars, (2, 5, 7)))
        batch, clips = torch.export.Dim("batch", min=1), torch.export.Dim("clips", min=1, max=cfg.max_pos_len)
        words, chars = torch.export.Dim("words", min=1, max=cfg.max_pos_len), torch.export.Dim("chars", min=4)
        shapes = ({0: batch, 1: clips}, {0: batch}, {0: batch, 1: words}, {0: batch, 1: words, 2: chars})
        _exports[id(model)] = dynamo_export(WholeModel(model.cpu().eval()), example, INPUT_NAMES,
                                            ("start_index", "end_index", "score"), shapes, cfg.max_pos_len)
    return _exports[id(model)]


def peer_runner(name: str, model: SeqPAN, precision: str, threads: int) -> Callable[..., object]:
    """A function of the reference's inputs running `model`'s export on peer `name` in `precision`."""
    blob = export_whole_model(model)
    if name == "onnxruntime-dynamic":
        if precision != "fp32":
            raise ValueError("onnxruntime's CPU kernels run this model in fp32 only")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = onnxruntime.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
        return lambda *inputs: session.run(None, feeds(inputs))
    if name == "openvino-dynamic":
        import openvino

        core = openvino.Core()
        compiled = core.compile_model(core.read_model(blob, b""), "CPU", {
            "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision], "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads})
        request = compiled.create_infer_request()
        return lambda *inputs: request.infer(feeds(inputs))
    raise ValueError(f"unknown peer {name!r}; choose one of {', '.join(PEERS)}")


def feeds(inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    return {name: t.numpy() for name, t in zip(INPUT_NAMES, inputs)}
