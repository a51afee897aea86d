"""The CPU fast path: SeqPAN's whole forward (the engine's: unique videos encoded once) compiled by
OpenVINO, one static-shape model per bucket shape, the compiled models cached on disk.

A shape is (videos, queries, clips, words, chars). The engine already buckets clips, words and
chars; here the query and video counts are bucketed too (`rows_bucket`), padding with copies of
the last row (samples never interact, so no answer changes, in either padding mode). The graph is
traced once per model and padding mode (TorchScript, through OpenVINO's PyTorch frontend) with
every dimension dynamic; a shape missing from the disk cache is that model made static, compiled
(about a second) and stored; a later process imports it.

fp32 is exact (OpenVINO is told `INFERENCE_PRECISION_HINT: f32`, else it may run bf16 on CPUs
with bf16 units); bf16 runs OpenVINO's bf16 kernels where the CPU has them and fp32 elsewhere.
"""
from __future__ import annotations

import io
import logging
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from reference.config import SeqPANConfig
from reference.model import SeqPAN, SeqPANOutput, prepare_inputs
from reference.matching import NUM_LABELS
from reference.ops import check_padding, weights_device, weights_dtype

from ..batching import char_bucket, clip_bucket, round_up, word_bucket
from ..errors import BackendError
from ..io.checkpoint import weights_hash
from .disk_cache import CacheKey, EngineCache, cache_root
from .grounding_graph import GroundingGraph

GRAPH_VERSION = "1"  # bump when GroundingGraph's inputs, outputs or semantics change
RUNTIME_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}  # engine precision -> OpenVINO inference precision
MAX_MODELS = 64  # compiled models kept in memory, in all and per instance (least recently used dropped)
KEEP_TRACED = 4  # traced models kept in memory, by (weights hash, padding)
TRACE_SHAPE = (2, 3, 6, 5, 7)  # (videos, queries, clips, words, chars) traced at: distinct sizes, none 1
ROW_STEPS = ((8, 1), (32, 4), (64, 8), (128, 16))  # (up to this many rows, pad to a multiple of this)
log = logging.getLogger(__name__)
_traced: dict[tuple[str, str], object] = {}  # (weights hash, padding) -> dynamic-shape OpenVINO model
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


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def rows_bucket(count: int) -> int:
    """Padded query or video count: exact up to 8, then a multiple of 4 up to 32, of 8 up to 64, of 16
    up to 128 and of 32 above, so that padding rows cost at most a third (a quarter above 32)."""
    for limit, step in ROW_STEPS:
        if count <= limit:
            return round_up(count, step)
    return round_up(count, 32)


def pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """`t` grown to `rows` rows by repeating its last row."""
    extra = rows - t.shape[0]
    return t if extra == 0 else torch.cat([t, t[-1:].expand(extra, *t.shape[1:])])


@dataclass(frozen=True)
class CompiledKey(CacheKey):
    """Everything a compiled model depends on; its digest names the cache entry."""
    weights_hash: str
    padding: str
    shape: tuple[int, ...]  # (videos, queries, clips, words, chars)
    precision: str  # OpenVINO's inference precision
    runtime: str
    cpu: str
    graph_version: str = GRAPH_VERSION


class CompiledGraphs:
    """GroundingGraph of one model and padding mode as OpenVINO models, one per input shape.

    The graph is traced once (on the first shape missing from the disk cache) with every dimension
    dynamic; each shape is that model made static and compiled (GroundingGraph has no op whose
    count depends on a dimension, so one trace serves every shape)."""

    def __init__(self, model: SeqPAN, padding: str, precision: str = "fp32", cache_dir: str | Path | None = None,
                 threads: int | None = None):
        check_padding(padding)
        self.graph = GroundingGraph(model, padding).eval()
        self.padding = padding
        self.precision = runtime_precision(precision)
        self.weights_hash = weights_hash(model)
        with torch.no_grad():  # every row of the word embedding, as the graph's word_vectors input wants them
            self.word_table = model.query_encoder.words(torch.arange(model.cfg.num_words))
        self.cache = EngineCache(cache_dir or cache_root("openvino"))
        self.config = {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "LATENCY",
                       "INFERENCE_NUM_THREADS": threads or available_cores()}
        self.requests: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self.status: dict[tuple[int, ...], str] = {}  # shape -> "in memory", "cached" or why it was built

    def key(self, shape: tuple[int, ...]) -> CompiledKey:
        return CompiledKey(self.weights_hash, self.padding, shape, self.precision, openvino().__version__, cpu_name())

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """Run on (video, video_len, video_index, word_ids, char_ids, noise); GroundingGraph's outputs."""
        video, _, _, word_ids, char_ids, _ = inputs
        feeds = (*inputs[:4], F.embedding(word_ids, self.word_table), *inputs[4:])
        request = self.request((video.shape[0], word_ids.shape[0], video.shape[1], word_ids.shape[1], char_ids.shape[2]))
        request.infer([t.numpy() for t in feeds], share_inputs=True)
        return [torch.from_numpy(request.get_output_tensor(i).data.copy()) for i in range(len(request.model_outputs))]

    def request(self, shape: tuple[int, ...]):
        """The infer request for `shape` (videos, queries, clips, words, chars)."""
        if shape not in self.requests:
            self.requests[shape] = self.compiled_model(shape).create_infer_request()
            while len(self.requests) > MAX_MODELS:
                self.requests.popitem(last=False)
        self.requests.move_to_end(shape)
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
        """The graph compiled for `shape`, serialized."""
        traced_key = (self.weights_hash, self.padding)
        if traced_key not in _traced:
            _traced[traced_key] = trace(self.graph)
            while len(_traced) > KEEP_TRACED:
                _traced.pop(next(iter(_traced)))
        model = _traced[traced_key].clone()
        model.reshape({i: list(t.shape) for i, t in enumerate(graph_inputs(self.graph.model.cfg, shape))})
        stream = io.BytesIO()
        core().compile_model(model, "CPU", self.config).export_model(stream)
        return stream.getvalue()


def trace(graph: GroundingGraph):
    """`graph` as an OpenVINO model with every input dimension dynamic."""
    ov = openvino()
    example = graph_inputs(graph.model.cfg, TRACE_SHAPE)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python values taken from shapes: none depend on them
        traced = torch.jit.trace(graph, example, check_trace=False)
        return ov.convert_model(traced, example_input=example, input=[ov.PartialShape.dynamic(t.dim()) for t in example])


def graph_inputs(cfg: SeqPANConfig, shape: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """GroundingGraph inputs of `shape` (videos, queries, clips, words, chars): full-length videos and
    queries, query i on video i mod videos, zero features."""
    videos, queries, clips, words, chars = shape
    return (torch.zeros(videos, clips, cfg.visual_dim), torch.full((videos,), clips),
            torch.arange(queries) % videos, torch.ones(queries, words, dtype=torch.long),
            torch.zeros(queries, words, cfg.word_dim), torch.ones(queries, words, chars, dtype=torch.long),
            torch.zeros(queries, clips, NUM_LABELS))


class OpenVinoSeqPAN(nn.Module):
    """The `openvino` backend: called like SeqPAN (both padding modes), and `ground_batch` runs the
    engine's batch (unique videos, an index per query) on bucketed shapes."""

    def __init__(self, model: SeqPAN, precision: str = "fp32", cache_dir: str | Path | None = None,
                 threads: int | None = None, warmup: bool | list[tuple[int, int, int, int, int]] = False):
        super().__init__()
        if weights_dtype(model) != torch.float32:
            raise BackendError(f"the openvino backend compiles float32 models, got {weights_dtype(model)}")
        if weights_device(model).type != "cpu":
            raise BackendError("the openvino backend runs on CPU")
        self.model = model
        self.cfg = model.cfg
        self.options = {"precision": precision, "cache_dir": cache_dir, "threads": threads}
        runtime_precision(precision)  # fail now on a bad precision
        self.graphs: dict[str, CompiledGraphs] = {}
        if warmup:
            self.warm_up(common_shapes(self.cfg) if warmup is True else warmup)

    def compiled(self, padding: str) -> CompiledGraphs:
        if padding not in self.graphs:
            self.graphs[padding] = CompiledGraphs(self.model, padding, **self.options)
        return self.graphs[padding]

    def ground_batch(self, video: torch.Tensor, video_len: torch.Tensor, video_index: torch.Tensor,
                     word_ids: torch.Tensor, char_ids: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The engine's step (isolated padding): start_index, end_index, score, start_logits, end_logits
        per query, as GroundingEngine._forward returns them."""
        queries, videos = rows_bucket(len(video_index)), rows_bucket(len(video_len))
        out = self.compiled("isolated")(pad_rows(video, videos), pad_rows(video_len, videos),
                                        pad_rows(video_index, queries), pad_rows(word_ids, queries),
                                        pad_rows(char_ids, queries), pad_rows(noise, queries))
        start_logits, end_logits, _, start_index, end_index, score = (t[: len(video_index)] for t in out)
        return start_index, end_index, score, start_logits, end_logits

    def warm_up(self, shapes: list[tuple[int, int, int, int, int]], padding: str = "isolated") -> None:
        """Compile (or load from the disk cache) the given (videos, queries, clips, words, chars) shapes."""
        graphs = self.compiled(padding)
        for shape in shapes:
            graphs.request(tuple(shape))

    def forward(self, video: torch.Tensor, video_len: torch.Tensor, word_ids: torch.Tensor, char_ids: torch.Tensor,
                padding: str = "isolated", gumbel_noise: torch.Tensor | None = None) -> SeqPANOutput:
        """SeqPAN.forward: every query with its own video, at the batch's exact (cut) shape."""
        check_padding(padding)
        inp = prepare_inputs(video, video_len, word_ids, char_ids, self.cfg.visual_dim)
        b, n = inp.video_mask.shape
        noise = (torch.zeros(b, n, NUM_LABELS) if gumbel_noise is None else gumbel_noise[:, :n].float()).contiguous()
        rows = rows_bucket(b)
        out = self.compiled(padding)(*(pad_rows(t.contiguous(), rows) for t in (
            inp.video.float(), inp.video_len.long(), torch.arange(b), inp.word_ids.long(), inp.char_ids.long(), noise)))
        start_logits, end_logits, match_logits, start_index, end_index, score = (t[:b] for t in out)
        return SeqPANOutput(start_logits, end_logits, match_logits, start_index, end_index, score, inp.video_mask)


def common_shapes(cfg: SeqPANConfig) -> list[tuple[int, int, int, int, int]]:
    """The shapes most single requests run at: one full-length video, one query of up to 8 or 16
    words of up to 8 or 16 characters."""
    clips = clip_bucket(cfg.max_pos_len, cfg.max_pos_len)
    return [(1, 1, clips, word_bucket(words, cfg.max_pos_len), char_bucket(chars)) for words in (8, 16)
            for chars in (8, 16)]


def openvino_seqpan(model: SeqPAN, precision: str = "fp32", **options) -> OpenVinoSeqPAN:
    """The `openvino` backend for `model`. Options: `cache_dir` (default $SEQPAN_CACHE_DIR/openvino or
    ~/.cache/seqpan/openvino), `threads` (default: the cores this process may use), `warmup` (True:
    compile `common_shapes` now; or a list of (videos, queries, clips, words, chars) shapes)."""
    openvino()
    return OpenVinoSeqPAN(model, precision, **options)
