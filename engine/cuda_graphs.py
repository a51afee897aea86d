"""CUDA graphs: one function captured at fixed input shapes, and a bounded cache of them keyed by shape."""
from __future__ import annotations

from collections import OrderedDict
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


def shape_key(inputs: Sequence[torch.Tensor | None]) -> tuple:
    """What a captured graph depends on: every input's shape, dtype and device (None as None)."""
    return tuple(None if t is None else (tuple(t.shape), t.dtype, t.device) for t in inputs)


class GraphCache:
    """One CapturedGraph of `fn` per input shape, sharing one memory pool; the `max_graphs` most
    recently used are kept."""

    def __init__(self, fn: Callable[..., Sequence[torch.Tensor]], max_graphs: int = 64, warmup: int = 2):
        self.fn, self.max_graphs, self.warmup = fn, max_graphs, warmup
        self.graphs: OrderedDict[tuple, CapturedGraph] = OrderedDict()
        self.pool = None

    def __len__(self) -> int:
        return len(self.graphs)

    def __call__(self, *inputs: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        key = shape_key(inputs)
        graph = self.graphs.get(key)
        if graph is None:
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            graph = self.graphs[key] = CapturedGraph(self.fn, inputs, self.warmup, self.pool)
            while len(self.graphs) > self.max_graphs:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        return graph(*inputs)
