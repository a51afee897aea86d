"""Runs I3D on batches of uint8 windows on a device at a precision: fp32 (the original's, the CPU
default), tf32, bf16 or fp16; on CUDA with channels-last memory and, optionally, one CUDA graph
per window length at a fixed batch size."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from reference.precision import PRECISIONS

from .errors import VideoError
from .i3d import InceptionI3d
from .scale import UNIT_RANGE


class WindowRunner:
    """`runner(windows)`: uint8 [B, L, 224, 224, 3] crops → float32 [B, ceil(L/8) - 1, 1024]."""

    def __init__(self, model: InceptionI3d, device: str | torch.device = "cpu", precision: str = "fp32",
                 cuda_graphs: bool = False, batch_size: int = 8):
        if precision not in PRECISIONS:
            raise VideoError(f"unknown precision {precision!r} (known: {', '.join(PRECISIONS)})")
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if precision in ("bf16", "fp16", "tf32") and not self.cuda:
            raise VideoError(f"eager I3D in {precision} needs a CUDA device; on the CPU, bf16 runs on the "
                             "openvino runtime (--runtime openvino)")
        self.precision, self.dtype = precision, PRECISIONS[precision].dtype
        self.memory_format = torch.channels_last_3d if self.cuda else torch.contiguous_format
        self.model = model.eval().to(self.device, self.dtype, memory_format=self.memory_format) \
            if self.cuda else model.eval().to(self.device, self.dtype)
        self.unit_range = torch.from_numpy(UNIT_RANGE).to(self.device)
        self.cuda_graphs, self.batch_size = cuda_graphs and self.cuda, batch_size
        self.graphs: dict[int, object] = {}

    def _numerics(self):
        if not self.cuda:
            return contextlib.nullcontext()
        return torch.backends.cudnn.flags(enabled=True, allow_tf32=PRECISIONS[self.precision].dot == "tf32")

    def _forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = self.unit_range[crops.int()].permute(0, 4, 1, 2, 3)  # [B, 3, L, H, W]
        x = x.to(self.dtype).contiguous(memory_format=self.memory_format)
        return self.model.features(x).float()

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        crops = torch.from_numpy(np.ascontiguousarray(windows)).to(self.device)
        with torch.inference_mode(), self._numerics():
            if not self.cuda_graphs:
                return self._forward(crops).cpu().numpy()
            return self._replay(crops)

    def _replay(self, crops: torch.Tensor) -> np.ndarray:
        from engine.cuda_graphs import CapturedGraph

        count, length = crops.shape[0], crops.shape[1]
        if count > self.batch_size:
            raise ValueError(f"batch of {count} windows exceeds the captured batch size {self.batch_size}")
        padded = torch.zeros((self.batch_size, *crops.shape[1:]), dtype=crops.dtype, device=self.device)
        padded[:count] = crops
        if length not in self.graphs:
            self.graphs[length] = CapturedGraph(lambda c: (self._forward(c),), [padded])
        return self.graphs[length](padded)[0][:count].cpu().numpy()
