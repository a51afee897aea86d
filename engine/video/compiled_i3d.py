"""I3D on the CPU's runtime: the feature extractor converted to OpenVINO and compiled for one
window-batch shape (windows, frames) at a time, the compiled models cached on disk with the
engine's cache, keyed by the I3D weights' hash, the shape, the runtime version, the precision and
the CPU.

fp32 is exact (OpenVINO is told `INFERENCE_PRECISION_HINT: f32`; features within 1e-6 relative of
the eager model's); bf16 runs OpenVINO's bf16 kernels where the CPU has them (fp32 elsewhere).
"""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..compile.disk_cache import CacheKey, EngineCache, cache_root
from ..compile.openvino_backend import core, cpu_name, openvino, runtime_precision
from ..devices import available_cores
from .i3d import InceptionI3d
from .presets import CROP
from .scale import UNIT_RANGE

GRAPH_VERSION = "1"  # bump when _FeatureGraph's input, output or semantics change
CACHE_KIND = "openvino-i3d"


def i3d_hash(model: InceptionI3d) -> str:
    """A stable SHA-256 over every I3D parameter and buffer (names, shapes and float32 values)."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(f"{name}{tuple(value.shape)}".encode())
        h.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class I3dKey(CacheKey):
    """Everything a compiled I3D depends on; its digest names the cache entry."""
    weights_hash: str
    shape: tuple[int, int]  # (windows, frames)
    precision: str  # OpenVINO's inference precision
    runtime: str
    cpu: str
    graph_version: str = GRAPH_VERSION


class _FeatureGraph(nn.Module):
    """[B, L, 224, 224, 3] frames in [-1, 1] (the crops' layout) → [B, ceil(L/8) - 1, 1024]."""

    def __init__(self, model: InceptionI3d):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.features(frames.permute(0, 4, 1, 2, 3))


class CompiledWindowRunner:
    """`runner(windows)`: uint8 [B, L, 224, 224, 3] crops → float32 [B, ceil(L/8) - 1, 1024], as
    WindowRunner, with I3D compiled by OpenVINO for the CPU (one compiled model per (B, L))."""

    def __init__(self, model: InceptionI3d, precision: str = "fp32", cache_dir: str | Path | None = None,
                 threads: int | None = None):
        self.graph = _FeatureGraph(model.eval().float())
        self.precision = runtime_precision(precision)
        self.weights_hash = i3d_hash(model)
        self.cache = EngineCache(cache_dir or cache_root(CACHE_KIND))
        self.config = {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "LATENCY",
                       "INFERENCE_NUM_THREADS": threads or available_cores()}
        self.requests: dict[tuple[int, int], object] = {}
        self.converted: dict[int, object] = {}  # window length -> OpenVINO model, before reshaping
        self.status: dict[tuple[int, int], str] = {}  # shape -> "cached" or why it was built

    def key(self, shape: tuple[int, int]) -> I3dKey:
        return I3dKey(self.weights_hash, shape, self.precision, openvino().__version__, cpu_name())

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        request = self.request(tuple(windows.shape[:2]))
        request.infer([UNIT_RANGE[windows]], share_inputs=True)
        return request.get_output_tensor(0).data.copy()

    def request(self, shape: tuple[int, int]):
        """The infer request for `shape` (windows, frames): imported from the disk cache, else built."""
        if shape not in self.requests:
            key = self.key(shape)
            blob, status = self.cache.get_or_build(key, lambda: self.build(shape))
            try:
                compiled = core().import_model(blob, "CPU", self.config)  # the precision hint is not in the blob
            except RuntimeError as err:  # unreadable for this runtime despite a matching key: rebuild it
                blob, status = self.build(shape), f"built (cached model did not import: {err})"
                self.cache.store(key, blob)
                compiled = core().import_model(blob, "CPU", self.config)
            self.status[shape] = status
            self.requests[shape] = compiled.create_infer_request()
        return self.requests[shape]

    def build(self, shape: tuple[int, int]) -> bytes:
        """I3D converted and compiled for `shape`, serialized."""
        windows, frames = shape
        if frames not in self.converted:
            self.converted[frames] = convert(self.graph, frames)
        model = self.converted[frames].clone()
        model.reshape({0: [windows, frames, CROP, CROP, 3]})
        stream = io.BytesIO()
        core().compile_model(model, "CPU", self.config).export_model(stream)
        return stream.getvalue()


def convert(graph: _FeatureGraph, frames: int):
    """`graph` as an OpenVINO model for windows of `frames` frames (any number of windows): traced on
    one window, since the 'SAME' paddings depend on the window's length but not on the batch."""
    example = torch.zeros(1, frames, CROP, CROP, 3)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on paddings taken as constants: they are, per length
        traced = torch.jit.trace(graph, example, check_trace=False)
        return openvino().convert_model(traced, example_input=example)
