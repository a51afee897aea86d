"""GroundingEngine: batched, batch-invariant, deterministic grounding of (video, query) requests."""
from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Callable, Hashable, Sequence

import numpy as np
import torch

from reference.matching import NUM_LABELS
from reference.model import SeqPAN
from reference.ops import length_mask
from reference.precision import ENGINE_PRECISIONS

from .backends import build_backend
from .buckets import Shape, plan_batches
from .checks import check_positive_int
from .data.features import index_to_time
from .devices import autocast, resolve_backend, resolve_device, resolve_precision
from .errors import BackendError, RequestError, UsageError, one_line
from .io.checkpoint import load_checkpoint
from .isolate import isolating
from .limits import Limits
from .lru import LRU
from .prepare import Prepared, QueryTokens, prepare_request, tokenize_query
from .requests import GroundingRequest, GroundingResult
from .shape_plan import ShapePlan
from .spans import top_spans
from .stages import STAGE_NAMES, EagerStep, stage_inputs
from .wire import in_input_order

PRECISIONS = ("auto", *ENGINE_PRECISIONS)
log = logging.getLogger("seqpan")


class GroundingEngine:
    """Grounds requests in batches bucketed by (clips, words); results do not depend on batching.

    The step runs in three stages (`engine.stages`: video encoder, query encoder, the rest), each at
    the static shapes of the engine's `plan` (`engine.shape_plan`, a function of the model's config,
    `max_batch` and `limits.max_word_chars`), so the shapes it compiles are known and few;
    `warm_up()` compiles (or captures) them all, after which no request waits for a compile.
    A query's tokens and its encoding are kept per text (`query_cache` entries, least recently used
    dropped), so a repeated query skips tokenizing and the query encoder; a `.npy` file's features
    are kept under the file's identity (`feature_cache` files; a changed file is read again), and a
    video's encoding under its file's identity or its features' SHA-256 (`video_cache` videos), so
    a query on a recently seen video skips the video encoder; each of these two holds at most
    `cache_bytes` (256 MiB) of tensors. Each stage runs every item alone, so
    a kept result is bitwise the one it would compute again.

    On CPU it runs fp32 by default on the openvino backend (every stage compiled by OpenVINO; the
    reference when OpenVINO does not import). On CUDA it runs bf16 by default and replays one CUDA
    graph per stage shape. `backend_options` go to the backend (openvino: cache_dir,
    cache_max_bytes, threads).

    Untrusted requests: `limits` bounds the work one request may ask for; `features_root` confines
    `.npy` paths to one folder (symlinks followed; every refused path gets the same message), and
    `allow_feature_paths=False` refuses all paths, so features must come inline.
    """

    def __init__(self, model: SeqPAN, word_dict: dict[str, int], char_dict: dict[str, int],
                 device: str | torch.device = "auto", precision: str = "auto", backend: str = "auto",
                 max_batch: int = 64, cuda_graphs: bool | None = None,
                 video_source: Callable[[str | Path], tuple[np.ndarray, float]] | None = None,
                 features_root: str | Path | None = None, allow_feature_paths: bool = True,
                 limits: Limits | None = None, backend_options: dict | None = None, query_cache: int = 4096,
                 feature_cache: int = 4096, video_cache: int = 4096, cache_bytes: int = 256 << 20):
        if precision not in PRECISIONS:
            raise BackendError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        check_positive_int("max_batch", max_batch)
        if features_root is not None and not Path(features_root).is_dir():
            raise UsageError(f"features root {str(features_root)!r} is not a folder")
        self.features_root = None if features_root is None else Path(features_root).resolve()
        self.allow_feature_paths = allow_feature_paths
        self.limits = Limits() if limits is None else limits
        self.device = resolve_device(device)
        on_gpu = self.device.type == "cuda"
        self.precision = resolve_precision(precision, self.device)
        self.backend_name = resolve_backend(backend, self.device)
        self.cfg = model.cfg
        self.word_dict, self.char_dict = word_dict, char_dict
        self.max_batch = max_batch
        self.video_source = video_source  # video file -> ([T, visual_dim] features, duration), e.g. I3D
        self.plan = ShapePlan.of(self.cfg, max_batch, self.limits.max_word_chars)
        model = model.to(self.device).eval()
        self.model = build_backend(self.backend_name, model, precision=self.precision, **(backend_options or {}))
        if hasattr(self.model, "engine_step"):  # a backend that compiles the stages itself (openvino)
            self.step = self.model.engine_step(self.plan)
        else:
            graphs = on_gpu if cuda_graphs is None else cuda_graphs
            self.step = EagerStep(self.model, self.plan, lambda: autocast(self.device, self.precision,
                                                                          self.backend_name), graphs)
        self.tokens: LRU[str, QueryTokens] = LRU(query_cache)
        self.encoded_queries: LRU[str, torch.Tensor] = LRU(query_cache)
        # features by file identity; encoded videos by file identity or content
        self.feature_files: LRU[Hashable, torch.Tensor] = LRU(feature_cache, cache_bytes, tensor_bytes)
        self.encoded_videos: LRU[Hashable, torch.Tensor] = LRU(video_cache, cache_bytes, tensor_bytes)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", precision: str = "auto",
                        backend: str = "auto", **options) -> "GroundingEngine":
        """Load a native checkpoint (see `seqpan convert-tf` and `seqpan train`)."""
        ckpt = load_checkpoint(path)
        return cls(ckpt.model, ckpt.word_dict, ckpt.char_dict, device, precision, backend, **options)

    @property
    def description(self) -> str:
        return f"{self.backend_name} backend, {self.precision}, {self.device}{self.step.description}"

    def warm_up(self, progress: Callable[[int], None] | None = None) -> None:
        """Run every stage once at every shape of the plan (compiling or capturing each), so that no
        request waits for one later; `progress` gets 1 per shape."""
        for name in STAGE_NAMES:
            for shape in self.plan.shapes(name):
                self.step.run(name, *(t.to(self.device) for t in stage_inputs(self.cfg, name, shape)))
                if progress:
                    progress(1)

    def prepare(self, request: GroundingRequest, cache: dict[Hashable, torch.Tensor] | None = None) -> Prepared:
        """Validate one request and turn it into model inputs (`engine.prepare`); raises RequestError.
        A `video` request gets its features (and, without a duration, the file's) from the engine's
        video source; its path obeys `features_root` and `allow_feature_paths` as a `.npy` path does."""
        return prepare_request(request, self.cfg, self.word_dict, self.char_dict, {} if cache is None else cache,
                               self.limits, self.features_root, self.allow_feature_paths, self.query_tokens,
                               self.feature_files, self.video_source)

    def query_tokens(self, text: str) -> QueryTokens:
        """The tokens of a checked query text (kept per text)."""
        tokens = self.tokens.get(text)
        if tokens is None:
            tokens = self.tokens.put(text, tokenize_query(text, self.cfg, self.word_dict, self.char_dict))
        return tokens

    # -- running -----------------------------------------------------------------------------
    def ground(self, requests: Sequence[GroundingRequest],
               progress: Callable[[int], None] | None = None) -> list[GroundingResult]:
        """Ground every request; a request that cannot be served gets a result with `error` set, and
        whatever one request holds never fails another."""
        entries = self.prepare_all(requests)
        for _ in range(sum(isinstance(e, GroundingResult) for e in entries) if progress else 0):
            progress(1)
        results = in_input_order(entries, self.run_prepared([e for e in entries if isinstance(e, Prepared)], progress))
        for request, result in zip(requests, results):
            result.id = getattr(request, "id", None)
        return results

    def prepare_all(self, requests: Sequence[GroundingRequest]) -> list[Prepared | GroundingResult]:
        """Each request prepared (`prepare`; a video several of them share is loaded once), or, when
        it is refused, its error result."""
        cache: dict[Hashable, torch.Tensor] = {}
        entries: list[Prepared | GroundingResult] = []
        for request in requests:
            try:
                entries.append(self.prepare(request, cache))
            except Exception as err:  # noqa: BLE001 - a request's failure is its own result
                entries.append(GroundingResult(getattr(request, "id", None), error=error_message(err)))
        return entries

    def run_prepared(self, items: Sequence[Prepared],
                     progress: Callable[[int], None] | None = None) -> list[GroundingResult]:
        """Prepared requests (from any number of `prepare_all` calls) grounded in batches bucketed by
        shape; their results in their order, without ids. `progress` gets each batch's size."""
        results: list[GroundingResult | None] = [None] * len(items)
        for shape, members in self.batch_plan(items):
            for k, result in zip(members, self.run_isolating([items[k] for k in members], shape)):
                results[k] = result
            if progress:
                progress(len(members))
        return results  # type: ignore[return-value]

    def batch_plan(self, items: Sequence[Prepared]) -> list[tuple[Shape, list[int]]]:
        """The batches `run_prepared` runs: each a shape and the indices of its items (at most max_batch)."""
        return plan_batches([(p.shape, p.video_key) for p in items], self.max_batch)

    def run_isolating(self, items: Sequence[Prepared], shape: Shape) -> list[GroundingResult]:
        """`run_batch`, retrying the halves of a batch that fails, so that only a request that fails
        alone gets the error."""
        return isolating(items, lambda batch: self.run_batch(batch, shape),
                         lambda _, err: GroundingResult(None, error=error_message(err)))

    def run_batch(self, items: Sequence[Prepared], shape: Shape) -> list[GroundingResult]:
        """One batch at `shape`: each video encoded once, each query text encoded once (then kept), the
        cross stage in chunks of the plan's batch sizes. Host-side arrays are built with numpy (torch's
        thread pool would fight the runtime's for the cores)."""
        b, n, m = len(items), shape.clips, shape.words
        videos: dict[Hashable, torch.Tensor] = {}
        for p in items:
            if p.video_key not in videos:
                videos[p.video_key] = self.encoded_video(p, n)
        queries: dict[str, torch.Tensor] = {}
        for p in items:
            if p.query.text not in queries:
                queries[p.query.text] = self.encode_query(p.query)
        v = cat_rows([videos[p.video_key] for p in items])
        q = pad_queries([queries[p.query.text] for p in items], m)
        video_len = torch.from_numpy(np.array([p.features.shape[0] for p in items]))
        query_len = torch.from_numpy(np.array([p.query.length for p in items]))
        noise = np.zeros((b, n, NUM_LABELS), np.float32)
        for i, p in enumerate(items):
            if p.noise is not None:
                noise[i, : p.noise.shape[0]] = p.noise.numpy()
        video_len_d, query_len_d, noise_d = (t.to(self.device) for t in (video_len, query_len, torch.from_numpy(noise)))
        logits, done = [], 0
        for size in self.plan.chunks(b):
            rows = slice(done, min(done + size, b))
            inputs = (v[rows], video_len_d[rows], q[rows], query_len_d[rows], noise_d[rows])
            logits.append(self.step.run("cross", *(pad_rows(t, size) for t in inputs))[:2])
            done += size
        start_logits = cat_rows([s for s, _ in logits])[:b]
        end_logits = cat_rows([e for _, e in logits])[:b]
        decoded = self.step.decode(start_logits, end_logits, length_mask(video_len_d, n))
        start, end, score = (t.cpu() for t in decoded)
        start_logits, end_logits = start_logits.float().cpu(), end_logits.float().cpu()
        results = []
        for i, p in enumerate(items):
            s, e, prob = int(start[i]), int(end[i]), float(score[i])
            # a non-finite score may come with any indices (a NaN's argmax is up to the backend)
            finite = math.isfinite(prob)
            t0, t1 = index_to_time(s, e, p.features.shape[0], p.duration) if finite else (math.nan, math.nan)
            if not all(math.isfinite(x) for x in (t0, t1, prob)):
                results.append(GroundingResult(None, error="the model gave a non-finite score for this request "
                                                           "(NaN/inf weights, or an activation overflowed)"))
                continue
            results.append(GroundingResult(None, float(t0), float(t1), s, e, prob))
            if p.top_k > 1:
                clips = p.features.shape[0]
                spans = top_spans(start_logits[i, :clips], end_logits[i, :clips], p.top_k, p.nms, first=(s, e))
                results[-1].moments = [self._moment(a, b, prob if k == 0 else span_prob, p)
                                       for k, (a, b, span_prob) in enumerate(spans)]
        return results

    def encoded_video(self, p: Prepared, clips: int) -> torch.Tensor:
        """The video stage's output for `p`'s video: kept (`video_cache`) under its file's identity or
        the SHA-256 of its features, so that no other video can share it."""
        if self.encoded_videos.capacity == 0:
            return self.encode_video(p.features, clips)
        key = p.video_key if p.video_key[0] == "file" else content_key(p.features)
        encoded = self.encoded_videos.get(key)
        if encoded is None:
            encoded = self.encoded_videos.put(key, self.encode_video(p.features, clips))
        return encoded

    def encode_video(self, features: torch.Tensor, clips: int) -> torch.Tensor:
        """The video stage on one video's features, padded to `clips`: [1, clips, dim]."""
        video = np.zeros((1, clips, self.cfg.visual_dim), np.float32)
        video[0, : features.shape[0]] = features.numpy()
        length = torch.from_numpy(np.array([features.shape[0]]))
        return self.step.run("video", torch.from_numpy(video).to(self.device), length.to(self.device))[0]

    def encode_query(self, tokens: QueryTokens) -> torch.Tensor:
        """The query stage on one query's tokens: [1, words bucket, dim], kept per text."""
        encoded = self.encoded_queries.get(tokens.text)
        if encoded is None:
            inputs = (self.step.word_vectors(tokens.word_ids[None]), tokens.char_ids[None],
                      torch.from_numpy(np.array([tokens.length])))
            encoded = self.encoded_queries.put(tokens.text, self.step.run("query", *(t.to(self.device) for t in inputs))[0])
        return encoded

    @staticmethod
    def _moment(s: int, e: int, score: float, p: Prepared) -> dict:
        t0, t1 = index_to_time(s, e, p.features.shape[0], p.duration)
        return {"start": float(t0), "end": float(t1), "start_index": s, "end_index": e, "score": score}


def tensor_bytes(t: torch.Tensor) -> int:
    return t.element_size() * t.nelement()


def content_key(features: torch.Tensor) -> tuple:
    """A key naming `features` by content: their shape and the SHA-256 of their float32 bytes."""
    data = np.ascontiguousarray(features.numpy())
    return ("sha256", data.shape, hashlib.sha256(memoryview(data).cast("B")).digest())


def on_numpy(t: torch.Tensor) -> bool:
    """Whether host work on `t` goes through numpy: a CPU tensor of a dtype numpy has."""
    return t.device.type == "cpu" and t.dtype != torch.bfloat16


def cat_rows(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """torch.cat along rows; with numpy where it can (`on_numpy`)."""
    if not on_numpy(tensors[0]):
        return torch.cat(list(tensors))
    return torch.from_numpy(np.concatenate([t.numpy() for t in tensors]))


def pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """`t` grown to `rows` rows by repeating its last row (rows never interact: no answer changes)."""
    extra = rows - t.shape[0]
    return t if extra == 0 else cat_rows([t, t[-1:].expand(extra, *t.shape[1:])])


def pad_queries(encoded: Sequence[torch.Tensor], words: int) -> torch.Tensor:
    """Encoded queries [1, M_i, dim] as one [B, words, dim] batch, zeros past each query's words."""
    first = encoded[0]
    if not on_numpy(first):
        out = torch.zeros(len(encoded), words, first.shape[2], dtype=first.dtype, device=first.device)
        for i, e in enumerate(encoded):
            out[i, : e.shape[1]] = e[0]
        return out
    array = np.zeros((len(encoded), words, first.shape[2]), dtype=first.numpy().dtype)
    for i, e in enumerate(encoded):
        array[i, : e.shape[1]] = e[0].numpy()
    return torch.from_numpy(array)


def error_message(err: Exception) -> str:
    """A request's error in one line: a RequestError's own message, anything else named as internal."""
    if isinstance(err, RequestError):
        return one_line(str(err))
    log.warning("seqpan: internal error serving a request: %s: %s", type(err).__name__, err,
                exc_info=log.isEnabledFor(logging.DEBUG))
    return one_line(f"internal error: {type(err).__name__}: {err}")[:500]

