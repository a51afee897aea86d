"""The CPU fast path: the engine's three-stage step (`engine.stages`) compiled by OpenVINO, one
static-shape model per stage and shape of the engine's shape plan, cached on disk.

Each stage is traced once per model and padding mode (TorchScript, through OpenVINO's PyTorch
frontend) with every dimension dynamic; a shape missing from the disk cache is that model made
static, compiled (a fraction of a second) and stored; a later process imports it. `warm_up` (the
engine's) compiles the whole plan, so no compile runs on a request's path afterwards.

fp32 is exact (OpenVINO is told `INFERENCE_PRECISION_HINT: f32`, else it may run bf16 on CPUs
with bf16 units); bf16 runs OpenVINO's bf16 kernels where the CPU has them and fp32 elsewhere.
"""
from __future__ import annotations

import io
import logging
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from reference.localizer import decode_span
from reference.model import SeqPAN, SeqPANOutput, prepare_inputs
from reference.matching import NUM_LABELS
from reference.ops import check_padding, weights_device, weights_dtype

from ..devices import available_cores
from ..errors import BackendError
from ..io.checkpoint import weights_hash
from ..shape_plan import ShapePlan
from ..stages import STAGES, stage_inputs, word_table
from .disk_cache import CacheKey, EngineCache, cache_root

GRAPH_VERSION = "2"  # bump when a stage's inputs, outputs or semantics change
RUNTIME_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}  # engine precision -> OpenVINO inference precision
MAX_MODELS = 512  # compiled models shared by the process's instances (least recently used dropped)
KEEP_TRACED = 12  # traced stages kept in memory, by (weights hash, stage, padding)
DEFAULT_CACHE_BYTES = 1 << 30  # the disk cache's bound (least recently used entries removed past it)
TRACE_SHAPES = {"video": (2, 6), "query": (3, 5, 7), "cross": (3, 6, 5)}  # distinct sizes, none 1
log = logging.getLogger(__name__)
_traced: OrderedDict[tuple[str, str, str], object] = OrderedDict()  # (weights hash, stage, padding) -> model
_compiled: OrderedDict[tuple[str, int], object] = OrderedDict()  # (key digest, threads) -> compiled model


def openvino():
    """The `openvino` module, or BackendError saying it is missing."""
    try:
        import openvino as ov
    except ImportError as err:
        raise BackendError(f"the openvino backend needs the openvino package ({err}); pip install openvino") from None
    return ov


@cache
def core():
    return openvino().Core()


def cpu_name() -> str:
    """The CPU as OpenVINO sees it: its name and the instruction sets it will use."""
    caps = core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return f"{core().get_property('CPU', 'FULL_DEVICE_NAME')} [{' '.join(sorted(caps))}]"


def runtime_precision(precision: str) -> str:
    """OpenVINO's inference precision for `precision`: bf16 only where the CPU has bf16 units."""
    if precision not in RUNTIME_PRECISIONS:
        raise BackendError(f"the openvino backend runs {' or '.join(RUNTIME_PRECISIONS)}, not {precision!r}")
    if precision == "bf16" and "BF16" not in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        log.warning("openvino backend: this CPU has no bf16 support; running fp32")
        return "f32"
    return RUNTIME_PRECISIONS[precision]


@dataclass(frozen=True)
class CompiledKey(CacheKey):
    """Everything a compiled model depends on; its digest names the cache entry."""
    weights_hash: str
    stage: str  # engine.stages.STAGES
    padding: str
    shape: tuple[int, ...]  # the stage's static shape (engine.shape_plan)
    precision: str  # OpenVINO's inference precision
    runtime: str
    cpu: str
    graph_version: str = GRAPH_VERSION


class StageModels:
    """One stage of one model and padding mode as OpenVINO models, one per static input shape.

    The stage is traced once (on the first shape missing from the disk cache) with every dimension
    dynamic; each shape is that model made static and compiled (no stage has an op whose count
    depends on a dimension, so one trace serves every shape). `loads` counts the models this
    instance took from the process, the disk cache or a compile; `status` says which per shape."""

    def __init__(self, model: SeqPAN, stage: str, padding: str, precision: str, cache: EngineCache, threads: int):
        check_padding(padding)
        self.module = STAGES[stage](model, padding).eval()
        self.stage, self.padding, self.precision, self.cache = stage, padding, precision, cache
        self.weights_hash = weights_hash(model)
        # no CPU pinning: each compiled model has its own threads, and pinned ones of the stage that just ran
        # fight the next stage's for the cores (measured on 2 cores, three stages in a row at B=1: 6.8 ms
        # pinned, 3.8 ms unpinned, 3.1 ms for the three alone)
        self.config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                       "INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False}
        self.requests: dict[tuple[int, ...], object] = {}  # shape -> infer request (bounded by the plan)
        self.status: dict[tuple[int, ...], str] = {}  # shape -> "in memory", "cached" or why it was built
        self.loads = 0

    def key(self, shape: tuple[int, ...]) -> CompiledKey:
        return CompiledKey(self.weights_hash, self.stage, self.padding, tuple(shape), self.precision,
                           openvino().__version__, cpu_name())

    def __call__(self, shape: tuple[int, ...], *inputs: np.ndarray) -> list[np.ndarray]:
        """The stage's outputs on `inputs` (numpy arrays of the stage's input shapes at `shape`)."""
        request = self.request(shape)
        request.infer(inputs, share_inputs=True)
        return [request.get_output_tensor(i).data.copy() for i in range(len(request.model_outputs))]

    def request(self, shape: tuple[int, ...]):
        """The infer request for `shape`."""
        if shape not in self.requests:
            self.requests[shape] = self.compiled_model(shape).create_infer_request()
            self.loads += 1
        return self.requests[shape]

    def compiled_model(self, shape: tuple[int, ...]):
        """The compiled model for `shape`: kept in memory (shared by every instance in the process),
        else imported from the disk cache, else built (and stored)."""
        key = self.key(shape)
        memory_key = (key.digest(), self.config["INFERENCE_NUM_THREADS"])
        if memory_key in _compiled:
            _compiled.move_to_end(memory_key)
            self.status[shape] = "in memory"
            return _compiled[memory_key]
        blob, status = self.cache.get_or_build(key, lambda: self.build(shape))
        try:
            compiled = core().import_model(blob, "CPU", self.config)  # the precision hint is not in the blob
        except RuntimeError as err:  # unreadable for this runtime despite a matching key: rebuild it
            self.cache.discard(key)
            blob, status = self.build(shape), f"built (cached model did not import: {err})"
            self.cache.store(key, blob)
            compiled = core().import_model(blob, "CPU", self.config)
        self.status[shape] = status
        _compiled[memory_key] = compiled
        while len(_compiled) > MAX_MODELS:
            _compiled.popitem(last=False)
        return compiled

    def build(self, shape: tuple[int, ...]) -> bytes:
        """The stage compiled for `shape`, serialized."""
        traced_key = (self.weights_hash, self.stage, self.padding)
        if traced_key not in _traced:
            _traced[traced_key] = trace(self.module, stage_inputs(self.module.model.cfg, self.stage,
                                                                  TRACE_SHAPES[self.stage]))
            while len(_traced) > KEEP_TRACED:
                _traced.popitem(last=False)
        _traced.move_to_end(traced_key)
        model = _traced[traced_key].clone()
        inputs = stage_inputs(self.module.model.cfg, self.stage, shape)
        model.reshape({i: list(t.shape) for i, t in enumerate(inputs)})
        stream = io.BytesIO()
        core().compile_model(model, "CPU", self.config).export_model(stream)
        return stream.getvalue()


def trace(module: nn.Module, example: tuple[torch.Tensor, ...]):
    """`module` as an OpenVINO model with every input dimension dynamic."""
    ov = openvino()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python values taken from shapes: none depend on them
        traced = torch.jit.trace(module, example, check_trace=False)
        return ov.convert_model(traced, example_input=example, input=[ov.PartialShape.dynamic(t.dim()) for t in example])


def shape_of(stage: str, inputs: tuple[torch.Tensor, ...]) -> tuple[int, ...]:
    """The plan shape of a stage's inputs."""
    if stage == "video":
        return tuple(inputs[0].shape[:2])
    if stage == "query":
        return tuple(inputs[1].shape)
    return (*inputs[0].shape[:2], inputs[2].shape[1])


class OpenVinoStep:
    """The engine's step (isolated padding) on OpenVINO: each stage's compiled models, the word table
    for the query stage's vectors, and the reference's span decoding."""

    def __init__(self, backend: "OpenVinoSeqPAN"):
        self.backend = backend
        self.words = backend.word_table

    def run(self, name: str, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Stage `name` on CPU tensors of a planned shape."""
        return self.backend.run_stage(name, "isolated", *inputs)

    def word_vectors(self, word_ids: torch.Tensor) -> torch.Tensor:
        return self.words[word_ids]

    @staticmethod
    def decode(start_logits: torch.Tensor, end_logits: torch.Tensor,
               mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return decode_span(start_logits, end_logits, mask)

    @property
    def loads(self) -> int:
        """Compiled models this step's stages have taken (from memory, disk or a compile) so far."""
        return sum(m.loads for (_, padding), m in self.backend.stages.items() if padding == "isolated")

    description = ""


class OpenVinoSeqPAN(nn.Module):
    """The `openvino` backend: called like SeqPAN (both padding modes, each stage at the batch's own
    shape), and `engine_step` gives the engine its three-stage step on the plan's shapes."""

    def __init__(self, model: SeqPAN, precision: str = "fp32", cache_dir: str | Path | None = None,
                 threads: int | None = None, cache_max_bytes: int | None = DEFAULT_CACHE_BYTES):
        super().__init__()
        if weights_dtype(model) != torch.float32:
            raise BackendError(f"the openvino backend compiles float32 models, got {weights_dtype(model)}")
        if weights_device(model).type != "cpu":
            raise BackendError("the openvino backend runs on CPU")
        self.model = model
        self.cfg = model.cfg
        self.precision = runtime_precision(precision)  # fails now on a bad precision
        self.threads = threads or available_cores()
        self.cache = EngineCache(cache_dir or cache_root("openvino"), cache_max_bytes)
        self.word_table = word_table(model)
        self.stages: dict[tuple[str, str], StageModels] = {}

    def stage(self, name: str, padding: str) -> StageModels:
        if (name, padding) not in self.stages:
            self.stages[name, padding] = StageModels(self.model, name, padding, self.precision, self.cache,
                                                     self.threads)
        return self.stages[name, padding]

    def run_stage(self, name: str, padding: str, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Stage `name` in `padding` mode on CPU tensors, at their shape."""
        inputs = tuple(t.contiguous() for t in inputs)
        out = self.stage(name, padding)(shape_of(name, inputs), *(t.numpy() for t in inputs))
        return tuple(torch.from_numpy(a) for a in out)

    def engine_step(self, plan: ShapePlan) -> OpenVinoStep:
        """The engine's step on this backend."""
        return OpenVinoStep(self)

    def forward(self, video: torch.Tensor, video_len: torch.Tensor, word_ids: torch.Tensor, char_ids: torch.Tensor,
                padding: str = "isolated", gumbel_noise: torch.Tensor | None = None) -> SeqPANOutput:
        """SeqPAN.forward: every query with its own video, each stage at the batch's exact (cut) shape."""
        check_padding(padding)
        inp = prepare_inputs(video, video_len, word_ids, char_ids, self.cfg.visual_dim)
        b, n = inp.video_mask.shape
        query_len = inp.query_mask.sum(dim=1)
        noise = torch.zeros(b, n, NUM_LABELS) if gumbel_noise is None else gumbel_noise[:, :n].float()
        v, = self.run_stage("video", padding, inp.video.float(), inp.video_len.long())
        q, = self.run_stage("query", padding, self.word_table[inp.word_ids.long()], inp.char_ids.long(), query_len)
        start_logits, end_logits, match_logits = self.run_stage("cross", padding, v, inp.video_len.long(), q,
                                                                query_len, noise)
        return SeqPANOutput(start_logits, end_logits, match_logits, *decode_span(start_logits, end_logits, inp.video_mask),
                            inp.video_mask)


def openvino_seqpan(model: SeqPAN, precision: str = "fp32", **options) -> OpenVinoSeqPAN:
    """The `openvino` backend for `model`. Options: `cache_dir` (default $SEQPAN_CACHE_DIR/openvino or
    ~/.cache/seqpan/openvino), `cache_max_bytes` (the disk cache's bound, default 1 GiB; None: no
    bound), `threads` (default: the cores this process may use). The engine's `warm_up` compiles its
    whole shape plan."""
    openvino()
    return OpenVinoSeqPAN(model, precision, **options)
