"""The benchmark behind `seqpan bench`: reference (eager, torch.compile), hand exports (on CPU) and
the engine's backends, in one process, on the same workload, each timed in its own block.

A reference or hand-export row times one forward of one padded batch of B queries on ready id
tensors (all a hand export can take). An `engine-*` row times what users call:
`GroundingEngine.ground(requests)`, arrays and query strings in, results out, with the engine's
query and video caches off (every query and video is new to it). An `engine-*-step` row times the same batches' step
(`GroundingEngine.run_batch` on requests prepared beforehand: the three stages and their batch
assembly, without request checks, tokenizing and planning).
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from engine import GroundingEngine, GroundingRequest, GroundingResult, MicroBatcher
from engine.backends import BACKENDS
from engine.devices import autocast
from reference.model import SeqPAN

from . import report
from .onnx_peers import PEERS, peer_runner
from .timing import environment, percentile, summarize, time_calls
from .workloads import NOTES, Workload, load_workload, model_inputs, random_model, requests

SECTIONS = ("rows", "batcher", "shared_video")
ENGINE_BACKENDS = tuple(f"engine-{name}" for name in [*BACKENDS, "auto"] if name != "engine")  # engine = auto
STEP_SUFFIX = "-step"  # engine-X-step: engine X's step alone
BACKEND_NAMES = (*report.BASELINES, *ENGINE_BACKENDS, *(f"{name}{STEP_SUFFIX}" for name in ENGINE_BACKENDS))
COMPILE_WARMUP = 3  # reduce-overhead compiles on the first call and records its CUDA graph on a later one
QUERIES_PER_VIDEO = 4  # the shared-video measurement's grouping
BATCHER = {"max_batch": 64, "max_wait_ms": 2.0}  # the micro-batcher's settings under load


def default_backends(device: torch.device) -> list[str]:
    """Both reference baselines and the engine's backends on a GPU; on CPU the reference baselines,
    what a CPU user would build by hand (the ONNX export on onnxruntime and OpenVINO) and the
    engine (the Triton kernels only run interpreted there)."""
    if device.type == "cuda":
        return ["reference-eager", "reference-compile", "engine-reference", "engine-triton", "engine-auto",
                "engine-auto-step"]
    return ["reference-eager", "reference-compile", *PEERS, "engine-auto", "engine-auto-step"]


@dataclass
class BenchOptions:
    workloads: Sequence[str]
    backends: Sequence[str]
    precisions: Sequence[str]
    batch_sizes: Sequence[int]
    device: torch.device
    repeats: int = 50
    warmup: int = 10
    min_seconds: float = 3.0  # each row's block of timed calls lasts at least this long
    sections: Sequence[str] = SECTIONS
    concurrency: Sequence[int] = (1, 8, 32)
    requests_per_submitter: int = 16
    shared_batch: int = 64
    time_budget_s: float | None = None
    out: Path | None = None
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))


def reference_forward(model, precision: str, device: torch.device) -> Callable[..., tuple[torch.Tensor, ...]]:
    """The reference forward on one padded batch (isolated padding); bf16 = autocast over fp32 weights."""
    def forward(video, video_len, words, chars):
        with autocast(device, precision):
            out = model(video, video_len, words, chars, "isolated")
        return out.start_index, out.end_index, out.score
    return forward


def engine_ground(engine: GroundingEngine, reqs: list[GroundingRequest]) -> Callable[[], object]:
    """A zero-argument call of `engine.ground(reqs)`, checked once first: every request is served."""
    errors = {r.error for r in engine.ground(reqs) if r.error is not None}
    if errors:
        raise RuntimeError(f"the engine refused workload requests: {sorted(errors)[:3]}")
    return lambda: engine.ground(reqs)


def engine_step(engine: GroundingEngine, reqs: list[GroundingRequest]) -> Callable[[], object]:
    """A zero-argument call running the engine's step on every batch `engine.ground(reqs)` runs, on
    the requests prepared beforehand (`GroundingEngine.prepare_all` and `batch_plan`)."""
    prepared = engine.prepare_all(reqs)
    refused = sorted(e.error for e in prepared if isinstance(e, GroundingResult))
    if refused:
        raise RuntimeError(f"the engine refused workload requests: {refused[:3]}")
    batches = [(shape, [prepared[k] for k in members]) for shape, members in engine.batch_plan(prepared)]
    return lambda: [engine.run_batch(items, shape) for shape, items in batches]


@dataclass
class Subject:
    """A workload with its random-weight model (on the device) and vocabularies."""
    workload: Workload
    model: SeqPAN
    vocab: tuple[dict[str, int], dict[str, int]]

    @classmethod
    def of(cls, workload: Workload, device: torch.device) -> Subject:
        return cls(workload, random_model(workload).to(device), workload.vocab())


class Bench:
    """One benchmark run; `results` fills up as it goes and is written after every backend."""

    def __init__(self, opts: BenchOptions):
        self.opts = opts
        self.started = time.perf_counter()
        env = environment(opts.device)
        env.update(repeats=opts.repeats, warmup=opts.warmup, notes=self.notes(), skipped=[])
        self.results: dict = {"env": env, "rows": [], "ratios": []}

    def notes(self) -> list[str]:
        opts = self.opts
        notes = [
            ("reference-* and hand-export rows time one forward on ready id tensors (on the device); engine-* "
             "rows time GroundingEngine.ground(requests) end to end (arrays and query strings in, results out; "
             "the engine's query and video caches off: every query and video new to it); engine-*-step rows "
             "time GroundingEngine.run_batch over the same batches, on requests prepared beforehand (the step "
             "and its batch assembly)"),
            ("workloads: real queries in file order from engine/data; synthesized N(0, 1) clip features (seeded); "
             "random weights; vocabulary built from the workload's queries"),
            ("engine rows encode each video once for all its queries in the batch (the annotations' grouping); "
             "reference rows encode every query's video"),
            ("bf16: torch.autocast(bfloat16) over fp32 weights on reference-* and engine-reference rows; "
             "bf16 weights and activations on engine-triton rows"),
            (f"p50 = median, p99 = nearest rank, over at least {opts.repeats} timed calls and {opts.min_seconds:g} s "
             f"after {opts.warmup} warm-up calls (at least {COMPILE_WARMUP} for reference-compile); "
             "queries/s = B / p50"),
            "× baseline = baseline p50 / engine p50 at the same workload, precision and batch",
            ("order: per workload and precision, at each batch size every backend but reference-compile, each "
             "in its own block of calls (runtimes keep worker threads spinning after a call, which would slow "
             "whatever runs next); then the batcher and shared-video sections, then reference-compile; with "
             "--time-budget, groups that would start after it are skipped (listed)"),
        ]
        if "reference-compile" in opts.backends:
            mode = "reduce-overhead" if opts.device.type == "cuda" else "default"
            notes.append(f"reference-compile: torch.compile(mode={mode!r}) of the reference forward, "
                         "compiled once per workload and precision; compilation happens in warm-up")
        if any(b in PEERS for b in opts.backends):
            notes.append("onnxruntime-dynamic / openvino-dynamic: the reference's isolated forward exported whole "
                         "with torch.onnx.export(dynamo=True) (dynamic batch, clips, words, chars), run by onnxruntime "
                         "(fp32; intra-op threads = torch's, inter-op 1) or OpenVINO (INFERENCE_PRECISION_HINT f32 or "
                         "bf16, torch's thread count) on those dynamic shapes; export and compilation untimed")
        if "engine-auto" in opts.backends and opts.device.type == "cpu":
            notes.append("engine on CPU (openvino backend): the three stages compiled by OpenVINO at the shapes of "
                         "the engine's plan the rows use, in the untimed first calls")
        return notes + [NOTES[w] for w in opts.workloads if w in NOTES]

    def log(self, line: str) -> None:
        self.opts.log(f"[bench {time.perf_counter() - self.started:6.1f}s] {line}")

    def out_of_time(self) -> bool:
        budget = self.opts.time_budget_s
        return budget is not None and time.perf_counter() - self.started > budget

    def skip(self, what: str, reason: str) -> None:
        reason = reason if len(reason) <= 300 else reason[:300] + " ..."
        self.results["env"]["skipped"].append(f"{what}: {reason}")
        self.log(f"skipped {what}: {reason}")

    def run(self) -> dict:
        """Every group in turn: eager and engine rows of every workload first, then the batcher and
        shared-video sections, then reference-compile (compiling takes longest), so that a time
        budget cuts the costliest groups first."""
        opts = self.opts
        subjects = [Subject.of(load_workload(name), opts.device) for name in opts.workloads]
        rows = "rows" in opts.sections
        extras = [s for s in ("batcher", "shared_video") if s in opts.sections]
        fast = [b for b in opts.backends if b != "reference-compile"]
        groups = [(f"{s.workload.name} {p} {', '.join(fast)}", partial(self.time_backends, s, p, fast))
                  for s in subjects for p in opts.precisions if rows and fast]
        groups += [(f"{s.workload.name} {', '.join(extras)}", partial(self.extras, s, extras))
                   for s in subjects if extras]
        groups += [(f"{s.workload.name} {p} reference-compile",
                    partial(self.time_backends, s, p, ["reference-compile"]))
                   for s in subjects for p in opts.precisions if rows and "reference-compile" in opts.backends]
        with torch.no_grad():
            for what, fn in groups:
                self.attempt(what, fn)
        self.write()
        return self.results

    def attempt(self, what: str, fn: Callable[[], None]) -> None:
        """Run one group of measurements; a failure (or a spent time budget) is noted and skipped,
        so that one backend failing does not lose the others' numbers."""
        if self.out_of_time():
            self.skip(what, "time budget spent")
            return
        try:
            fn()
        except Exception as err:  # noqa: BLE001 -- noted in env.skipped, the run goes on
            self.skip(what, f"{type(err).__name__}: {err}")
        self.write()
        if self.opts.device.type == "cuda":
            torch.cuda.empty_cache()

    def extras(self, subject: Subject, sections: list[str]) -> None:
        """The batcher and shared-video sections, on the engine-auto engine at the first precision."""
        engine = GroundingEngine(subject.model, *subject.vocab, device=self.opts.device,
                                 precision=self.opts.precisions[0], backend="auto",
                                 max_batch=max(self.opts.shared_batch, BATCHER["max_batch"]), video_cache=0)
        if "batcher" in sections:
            self.results.setdefault("batcher", []).extend(self.batcher(engine, subject.workload))
        if "shared_video" in sections:
            self.results.setdefault("shared_video", []).extend(self.shared_video(engine, subject.workload))

    def runner(self, subject: Subject, precision: str, backend: str):
        """(prepare, warm-up calls): prepare(records) returns the zero-argument call to time."""
        opts = self.opts
        workload, model, vocab = subject.workload, subject.model, subject.vocab
        if backend.startswith("reference-"):
            forward = reference_forward(model, precision, opts.device)
            warmup = opts.warmup
            if backend == "reference-compile":
                torch._dynamo.reset()  # a fresh cache: recompiles of earlier groups do not count here
                forward = torch.compile(forward, mode="reduce-overhead" if opts.device.type == "cuda" else None)
                warmup = max(warmup, COMPILE_WARMUP)

        elif backend in PEERS:
            if opts.device.type != "cpu":
                raise ValueError(f"{backend} is a CPU baseline")
            forward, warmup = peer_runner(backend, model, precision, torch.get_num_threads()), opts.warmup
        if backend.startswith("reference-") or backend in PEERS:
            def prepare(records):
                inputs = model_inputs(workload, records, *vocab, opts.device)
                return lambda: forward(*inputs)
            return prepare, warmup
        name = backend.removeprefix("engine-").removesuffix(STEP_SUFFIX)
        engine = GroundingEngine(model, *vocab, device=opts.device, precision=precision, backend=name,
                                 max_batch=max(opts.batch_sizes), query_cache=0, video_cache=0)
        note = f"engine-auto runs the {engine.backend_name} backend here"
        if name == "auto" and note not in self.results["env"]["notes"]:
            self.results["env"]["notes"].append(note)
        timed = engine_step if backend.endswith(STEP_SUFFIX) else engine_ground
        return (lambda records: timed(engine, requests(workload, records))), opts.warmup

    def time_backends(self, subject: Subject, precision: str, backends: Sequence[str]) -> None:
        """Rows of `backends` at every batch size on the same workload records, each backend timed in
        its own block; a backend that cannot be built is skipped (noted) and the others go on."""
        workload = subject.workload
        runners = {}
        for backend in backends:
            try:
                runners[backend] = self.runner(subject, precision, backend)
            except Exception as err:  # noqa: BLE001 -- noted in env.skipped, the others are timed
                self.skip(f"{workload.name} {precision} {backend}", f"{type(err).__name__}: {err}")
        if not runners:
            return
        for batch in self.opts.batch_sizes:
            records = workload.take(batch)
            times = {backend: time_calls(prepare(records), self.opts.device, warmup, self.opts.repeats,
                                         min_seconds=self.opts.min_seconds)
                     for backend, (prepare, warmup) in runners.items()}
            for backend in times:
                row = {"workload": workload.name, "backend": backend, "precision": precision, "batch": batch,
                       "n_clips": workload.n_clips,
                       "n_words": max(min(len(r.words), workload.n_clips) for r in records),
                       **summarize(times[backend], batch)}
                self.results["rows"].append(row)
                self.log(f"{workload.name} {precision} {backend} B={batch}: p50 {row['p50_ms']:.3f} ms, "
                         f"{row['queries_per_s']:,.0f} queries/s")

    def batcher(self, engine: GroundingEngine, workload: Workload) -> list[dict]:
        """p50/p99 request latency and throughput of a MicroBatcher under N closed-loop submitters
        (each submits its next request when the last one is answered). An untimed pass of the same
        load comes first, so that most CUDA graphs the load needs are captured before timing."""
        entries = []
        for submitters in self.opts.concurrency:
            reqs = requests(workload, workload.take(submitters * self.opts.requests_per_submitter))
            with MicroBatcher(engine, **BATCHER) as batcher:
                load(batcher, reqs, submitters)
                before = batcher.batches_run
                latencies, elapsed = load(batcher, reqs, submitters)
                batches = batcher.batches_run - before
            entries.append({"workload": workload.name, "backend": "engine-auto", "precision": engine.precision,
                            "concurrency": submitters, "requests": len(reqs), **BATCHER, "batches": batches,
                            "p50_ms": statistics.median(latencies),
                            "p99_ms": percentile(latencies, 99), "queries_per_s": len(reqs) / elapsed})
            self.log(f"{workload.name} batcher x{submitters}: p50 {entries[-1]['p50_ms']:.3f} ms, "
                     f"{entries[-1]['queries_per_s']:,.0f} queries/s")
        return entries

    def shared_video(self, engine: GroundingEngine, workload: Workload) -> list[dict]:
        """The engine step on `shared_batch` queries grouped 4 to a video: each video encoded once
        (shared) vs once per query (the same arrays under distinct video ids)."""
        batch = self.opts.shared_batch
        records = workload.take(batch)
        shared = requests(workload, records, [f"video-{i // QUERIES_PER_VIDEO}" for i in range(batch)])
        separate = [dataclasses.replace(r, video_id=f"{r.video_id}/{i}") for i, r in enumerate(shared)]
        entries = []
        for is_shared, reqs in ((True, shared), (False, separate)):
            times = time_calls(engine_step(engine, reqs), self.opts.device, self.opts.warmup, self.opts.repeats,
                               min_seconds=self.opts.min_seconds)
            cache: dict = {}  # the videos the engine encodes: its own sharing keys, not the request ids
            videos = len({engine.prepare(r, cache).video_key for r in reqs})
            entries.append({"workload": workload.name, "backend": "engine-auto", "precision": engine.precision,
                            "batch": batch, "videos": videos, "shared": is_shared,
                            **summarize(times, batch)})
            self.log(f"{workload.name} {batch} queries on {entries[-1]['videos']} videos: "
                     f"p50 {entries[-1]['p50_ms']:.3f} ms")
        return entries

    def write(self) -> None:
        """results.json now (also mid-run, so a killed run keeps what it measured)."""
        self.results["ratios"] = report.speedups(self.results["rows"])
        if self.opts.out is not None:
            self.opts.out.mkdir(parents=True, exist_ok=True)
            (self.opts.out / "results.json").write_text(json.dumps(self.results, indent=1))


def load(batcher: MicroBatcher, reqs: list[GroundingRequest], submitters: int) -> tuple[list[float], float]:
    """Submit `reqs` from `submitters` threads, each waiting for one answer before its next request;
    returns per-request latencies (ms) and the wall time of the whole load (s)."""
    def submitter(mine: list[GroundingRequest]) -> list[float]:
        latencies = []
        for req in mine:
            start = time.perf_counter()
            result = batcher.submit(req).result()
            latencies.append((time.perf_counter() - start) * 1e3)
            if result.error is not None:
                raise RuntimeError(f"request {req.id} failed: {result.error}")
        return latencies

    start = time.perf_counter()
    with ThreadPoolExecutor(submitters) as pool:
        per_thread = list(pool.map(submitter, [reqs[i::submitters] for i in range(submitters)]))
    return [t for times in per_thread for t in times], time.perf_counter() - start


def write_reports(results: dict, out: Path) -> list[Path]:
    """results.md and (with matplotlib) latency.png beside results.json; returns what was written."""
    written = [out / "results.json", out / "results.md"]
    written[1].write_text(report.render_markdown(results))
    if results["rows"] and report.plot_latency(results, out / "latency.png"):
        written.append(out / "latency.png")
    return written

