"""One CUDA graph of a function at fixed input shapes, replayed with inputs copied into static buffers."""
from __future__ import annotations

from typing import Callable, Sequence

import torch


class CapturedGraph:
    """`fn` captured once at the shapes of `inputs` (None entries pass through as None); calling it
    copies new inputs of the same shapes in, replays, and returns clones of the outputs."""

    def __init__(self, fn: Callable[..., Sequence[torch.Tensor]], inputs: Sequence[torch.Tensor | None],
                 warmup: int = 2, pool=None):
        self.inputs = tuple(None if t is None else t.clone() for t in inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):  # compile, autotune and lazily initialise outside the capture
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.outputs = tuple(fn(*self.inputs))

    def __call__(self, *inputs: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        for static, value in zip(self.inputs, inputs, strict=True):
            if static is not None:
                static.copy_(value)
        self.graph.replay()
        return tuple(t.clone() for t in self.outputs)
