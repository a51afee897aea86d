"""GroundingEngine: batched, batch-invariant, deterministic grounding of (video, query) requests."""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Callable, Hashable, Sequence

import numpy as np
import torch

from reference.matching import NUM_LABELS
from reference.model import SeqPAN
from reference.ops import length_mask, weights_dtype
from reference.errors import SeqPANError
from reference.precision import ENGINE_PRECISIONS

from .backends import auto_backend_name, build_backend
from .batching import Shape, batch_bucket, plan_batches
from .cuda_graphs import GraphCache, packed_weights_generation
from .data.features import index_to_time, resolve_feature_path
from .errors import BackendError, RequestError, UsageError, one_line
from .io.checkpoint import load_checkpoint
from .limits import Limits
from .requests import PATHS_REFUSED, GroundingRequest, GroundingResult, Prepared, prepare_request
from .spans import top_spans

PRECISIONS = ("auto", *ENGINE_PRECISIONS)
DEVICE_TYPES = ("cpu", "cuda")
log = logging.getLogger("seqpan")


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> a CUDA GPU when there is one, else the CPU; raises BackendError for a device that is
    not cpu/cuda[:N], or a CUDA device this machine does not have."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        parsed = None
    if parsed is None or parsed.type not in DEVICE_TYPES:
        raise BackendError(f"unknown device {str(device)!r}; use auto, cpu, cuda or cuda:N")
    device = parsed
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendError("device 'cuda' was asked for, but no CUDA GPU is available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise BackendError(f"device {str(device)!r} was asked for, but this machine has "
                           f"{torch.cuda.device_count()} CUDA GPU(s)")
    return device


class GroundingEngine:
    """Grounds requests in batches bucketed by (clips, words); results do not depend on batching.

    On CPU it runs fp32 by default on the openvino backend (the whole step compiled per bucket shape;
    the reference when OpenVINO does not import). On CUDA it runs bf16 by default and replays one
    CUDA graph per (batch, bucket) shape, keeping the `max_graphs` most recently used (`description`
    says how many it holds and their memory). `backend_options` go to the backend (openvino:
    cache_dir, threads, warmup).

    Untrusted requests: `limits` bounds the work one request may ask for; `features_root` confines
    `.npy` paths to one folder (symlinks followed; every refused path gets the same message), and
    `allow_feature_paths=False` refuses all paths, so features must come inline.
    """

    def __init__(self, model: SeqPAN, word_dict: dict[str, int], char_dict: dict[str, int],
                 device: str | torch.device = "auto", precision: str = "auto", backend: str = "auto",
                 max_batch: int = 256, cuda_graphs: bool | None = None,
                 video_source: Callable[[str | Path], tuple[np.ndarray, float]] | None = None,
                 features_root: str | Path | None = None, allow_feature_paths: bool = True,
                 limits: Limits | None = None, backend_options: dict | None = None, max_graphs: int = 64):
        if precision not in PRECISIONS:
            raise BackendError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise UsageError(f"max_batch must be a positive integer, got {max_batch!r}")
        if features_root is not None and not Path(features_root).is_dir():
            raise UsageError(f"features root {str(features_root)!r} is not a folder")
        self.features_root = None if features_root is None else Path(features_root).resolve()
        self.allow_feature_paths = allow_feature_paths
        self.limits = Limits() if limits is None else limits
        self.device = resolve_device(device)
        on_gpu = self.device.type == "cuda"
        self.precision = ("bf16" if on_gpu else "fp32") if precision == "auto" else precision
        self.backend_name = auto_backend_name(self.device) if backend == "auto" else backend
        self.cfg = model.cfg
        self.word_dict, self.char_dict = word_dict, char_dict
        self.max_batch = max_batch
        self.video_source = video_source  # video file -> ([T, visual_dim] features, duration), e.g. I3D
        model = model.to(self.device).eval()
        self.model = build_backend(self.backend_name, model, precision=self.precision, **(backend_options or {}))
        self.graphs = None
        if on_gpu if cuda_graphs is None else cuda_graphs:
            self.graphs = GraphCache(self._forward, max_graphs, generation=lambda: packed_weights_generation(self.model))
        # what runs on each padded batch's device tensors: a graph replay, or the forward itself
        self.device_step = self.graphs if self.graphs is not None else self._forward

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", precision: str = "auto",
                        backend: str = "auto", **options) -> "GroundingEngine":
        """Load a native checkpoint (see `seqpan convert-tf` and `seqpan train`)."""
        ckpt = load_checkpoint(path)
        return cls(ckpt.model, ckpt.word_dict, ckpt.char_dict, device, precision, backend, **options)

    @property
    def description(self) -> str:
        graphs = ""
        if self.graphs is not None:
            graphs = f", CUDA graphs ({len(self.graphs)} held, {self.graphs.memory_bytes / 2**20:.1f} MiB)"
        return f"{self.backend_name} backend, {self.precision}, {self.device}{graphs}"

    def prepare(self, request: GroundingRequest, cache: dict[Hashable, torch.Tensor] | None = None) -> Prepared:
        """Validate one request and turn it into model inputs; raises RequestError. A `video` request
        gets its features (and, without a duration, the file's) from the engine's video source; its
        path obeys `features_root` and `allow_feature_paths` as a `.npy` path does."""
        if isinstance(request, GroundingRequest) and request.video is not None:
            if self.video_source is None:
                raise RequestError("video requests need an engine with a video source (seqpan ground --i3d W.pt)")
            if not self.allow_feature_paths:
                raise RequestError(PATHS_REFUSED)
            try:
                features, duration = self.video_source(resolve_feature_path(request.video, self.features_root))
            except SeqPANError as err:
                raise RequestError(str(err)) from None
            request = dataclasses.replace(request, features=features, video=None,
                                          duration=duration if request.duration is None else request.duration)
        return prepare_request(request, self.cfg, self.word_dict, self.char_dict, {} if cache is None else cache,
                               self.limits, self.features_root, self.allow_feature_paths)

    # -- running -----------------------------------------------------------------------------
    def ground(self, requests: Sequence[GroundingRequest],
               progress: Callable[[int], None] | None = None) -> list[GroundingResult]:
        """Ground every request; a request that cannot be served gets a result with `error` set, and
        whatever one request holds never fails another."""
        results: list[GroundingResult | None] = [None] * len(requests)
        prepared: dict[int, Prepared] = {}
        cache: dict[Hashable, torch.Tensor] = {}
        for i, request in enumerate(requests):
            try:
                prepared[i] = self.prepare(request, cache)
            except Exception as err:  # noqa: BLE001 - a request's failure is its own result
                results[i] = GroundingResult(getattr(request, "id", None), error=error_message(err))
                if progress:
                    progress(1)
        order = list(prepared)
        plan = plan_batches([(prepared[i].shape, prepared[i].video_key) for i in order], self.max_batch)
        for shape, members in plan:
            idx = [order[k] for k in members]
            for i, result in zip(idx, self.run_isolating([prepared[i] for i in idx], shape)):
                result.id = requests[i].id
                results[i] = result
            if progress:
                progress(len(idx))
        return results  # type: ignore[return-value]

    def run_isolating(self, items: Sequence[Prepared], shape: Shape) -> list[GroundingResult]:
        """`run_batch`, retrying the halves of a batch that fails, so that only a request that fails
        alone gets the error."""
        try:
            return self.run_batch(items, shape)
        except Exception as err:  # noqa: BLE001 - narrowed down below, reported per request
            if len(items) == 1:
                return [GroundingResult(None, error=error_message(err))]
        half = len(items) // 2
        return self.run_isolating(items[:half], shape) + self.run_isolating(items[half:], shape)

    def run_batch(self, items: Sequence[Prepared], shape: Shape) -> list[GroundingResult]:
        """One padded batch at `shape`; each video is encoded once."""
        keys = list(dict.fromkeys(p.video_key for p in items))
        unique = {k: next(p.features for p in items if p.video_key == k) for k in keys}
        b, u = len(items), len(keys)
        if self.graphs is not None:
            b, u = batch_bucket(b), batch_bucket(u)
        video = torch.zeros(u, shape.clips, self.cfg.visual_dim)
        video_len = torch.ones(u, dtype=torch.long)
        for j, k in enumerate(keys):
            video[j, : unique[k].shape[0]] = unique[k]
            video_len[j] = unique[k].shape[0]
        video_index = torch.zeros(b, dtype=torch.long)
        words = torch.zeros(b, shape.words, dtype=torch.long)
        chars = torch.zeros(b, shape.words, shape.chars, dtype=torch.long)
        noise = torch.zeros(b, shape.clips, NUM_LABELS)
        for i in range(b):
            p = items[min(i, len(items) - 1)]  # graph padding rows repeat the last request
            video_index[i] = keys.index(p.video_key)
            words[i, : len(p.word_ids)] = torch.tensor(p.word_ids)
            for j, cids in enumerate(p.char_ids):
                chars[i, j, : len(cids)] = torch.tensor(cids, dtype=torch.long)
            if p.noise is not None:
                noise[i, : p.noise.shape[0]] = p.noise
        inputs = [t.to(self.device, non_blocking=True) for t in (video, video_len, video_index, words, chars, noise)]
        start, end, score, start_logits, end_logits = (t.cpu() for t in self.device_step(*inputs))
        results = []
        for i, p in enumerate(items):
            s, e = int(start[i]), int(end[i])
            # a non-finite score may come with any indices (a NaN's argmax is up to the backend)
            finite = math.isfinite(float(score[i]))
            t0, t1 = index_to_time(s, e, p.features.shape[0], p.duration) if finite else (math.nan, math.nan)
            if not all(math.isfinite(x) for x in (t0, t1, float(score[i]))):
                results.append(GroundingResult(None, error="the model gave a non-finite score for this request "
                                                           "(NaN/inf weights, or an activation overflowed)"))
                continue
            results.append(GroundingResult(None, float(t0), float(t1), s, e, float(score[i])))
            if p.top_k > 1:
                n = p.features.shape[0]
                spans = top_spans(start_logits[i, :n], end_logits[i, :n], p.top_k, p.nms, first=(s, e))
                results[-1].moments = [self._moment(a, b, float(score[i]) if k == 0 else prob, p)
                                       for k, (a, b, prob) in enumerate(spans)]
        return results

    @staticmethod
    def _moment(s: int, e: int, score: float, p: Prepared) -> dict:
        t0, t1 = index_to_time(s, e, p.features.shape[0], p.duration)
        return {"start": float(t0), "end": float(t1), "start_index": s, "end_index": e, "score": score}

    @torch.no_grad()
    def _forward(self, video: torch.Tensor, video_len: torch.Tensor, video_index: torch.Tensor,
                 words: torch.Tensor, chars: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Encode the unique videos once, gather them per query, run the rest; isolated padding."""
        model = self.model
        if hasattr(model, "ground_batch"):  # a backend that compiles this whole step (openvino)
            return model.ground_batch(video, video_len, video_index, words, chars, noise)
        with autocast(self.device, self.precision, self.backend_name):
            v_mask_u = length_mask(video_len, video.shape[1])
            v = model.encode_video(video.to(weights_dtype(model)), v_mask_u, "isolated")
            v, v_mask = v[video_index], v_mask_u[video_index]
            q_mask = words != 0
            q = model.encode_query(words, chars, q_mask, "isolated")
            out = model.ground_encoded(v, q, v_mask, q_mask, "isolated", noise.to(v.dtype))
        return out.start_index, out.end_index, out.score.float(), out.start_logits.float(), out.end_logits.float()


def error_message(err: Exception) -> str:
    """A request's error in one line: a RequestError's own message, anything else named as internal."""
    if isinstance(err, RequestError):
        return one_line(str(err))
    log.warning("seqpan: internal error serving a request: %s: %s", type(err).__name__, err,
                exc_info=log.isEnabledFor(logging.DEBUG))
    return one_line(f"internal error: {type(err).__name__}: {err}")[:500]


def autocast(device: torch.device, precision: str, backend: str):
    """bf16 autocast for the reference backend (GPU and CPU); kernels handle their own precision."""
    enabled = precision == "bf16" and backend == "reference"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)
