"""CUDA graphs: one function captured at fixed input shapes, and a bounded cache of them keyed by shape."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable, Sequence

import torch


class CapturedGraph:
    """`fn` captured once at the shapes of `inputs` (None entries pass through as None); calling it
    copies new inputs of the same shapes in, replays, and returns clones of the outputs.
    `memory_bytes`: the device memory its capture reserved (in `pool`, when given)."""

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
        reserved = torch.cuda.memory_reserved()
        with torch.cuda.graph(self.graph, pool=pool):
            self.outputs = tuple(fn(*self.inputs))
        self.memory_bytes = torch.cuda.memory_reserved() - reserved  # what the capture added to its pool

    def __call__(self, *inputs: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        for static, value in zip(self.inputs, inputs, strict=True):
            if static is not None:
                static.copy_(value)
        self.graph.replay()
        return tuple(t.clone() for t in self.outputs)


def shape_key(inputs: Sequence[torch.Tensor | None]) -> tuple:
    """What a captured graph depends on: every input's shape, dtype and device (None as None)."""
    return tuple(None if t is None else (tuple(t.shape), t.dtype, t.device) for t in inputs)


def packed_weights_generation(model: torch.nn.Module) -> int:
    """How many times the model's packed weight copies (its `packed_weights`, as the `triton`
    backend lists them) were built; 0 for a model that has none."""
    return sum(p.packs for p in getattr(model, "packed_weights", ()))


class GraphCache:
    """One CapturedGraph of `fn` per input shape, sharing one memory pool; the `max_graphs` most
    recently used are kept.

    Graphs replay raw pointers, to the weights too: `generation` (optional) tells when what they
    point to was rebuilt (`packed_weights_generation`), and every graph captured before is
    dropped then, never replayed on freed memory.
    `memory_bytes` is what the pool holds: the device memory reserved by captures since the pool
    was made (an evicted graph's memory stays in the pool for later captures).
    """

    def __init__(self, fn: Callable[..., Sequence[torch.Tensor]], max_graphs: int = 64, warmup: int = 2,
                 generation: Callable[[], Hashable] | None = None):
        self.fn, self.max_graphs, self.warmup, self.generation = fn, max_graphs, warmup, generation
        self.graphs: OrderedDict[tuple, CapturedGraph] = OrderedDict()
        self.pool = None
        self.memory_bytes = 0
        self._captured_at = generation() if generation else None

    def __len__(self) -> int:
        return len(self.graphs)

    def clear(self) -> None:
        """Drop every graph and the pool (its memory goes back to PyTorch's caching allocator)."""
        self.graphs.clear()
        self.pool, self.memory_bytes = None, 0

    def _repacked(self) -> bool:
        """Whether the weights the graphs point to were rebuilt since the last look (noting it)."""
        if self.generation is None:
            return False
        now = self.generation()
        changed, self._captured_at = now != self._captured_at, now
        return changed

    def __call__(self, *inputs: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        key = shape_key(inputs)
        if self._repacked():
            self.clear()
        graph = self.graphs.get(key)
        if graph is None:
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            graph = CapturedGraph(self.fn, inputs, self.warmup, self.pool)
            self.memory_bytes += graph.memory_bytes
            if self._repacked():  # the capture's warm-up repacked: the graphs before it are stale
                self.graphs.clear()
            self.graphs[key] = graph
            while len(self.graphs) > self.max_graphs:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        return graph(*inputs)
