"""Timing primitives: per-call latencies (CUDA events on a GPU, perf_counter on CPU), percentiles,
and a description of the machine the numbers come from."""
from __future__ import annotations

import math
import os
import platform
import statistics
import time
from pathlib import Path
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int,
               calls_per_sample: int = 1, min_seconds: float = 0.0) -> list[float]:
    """Milliseconds per call of at least `repeats` samples (more until `min_seconds` have passed),
    each timing `calls_per_sample` back-to-back calls of `fn` (their mean), after `warmup` untimed calls.

    On a GPU each sample is bracketed by CUDA events (device time from the first to the last
    kernel it enqueues, host stalls inside included); on CPU by perf_counter.
    """
    samples = time_interleaved({"fn": fn}, device, warmup, repeats, calls_per_sample)["fn"]
    began = time.perf_counter()
    while time.perf_counter() - began < min_seconds - sum(samples) / 1e3:
        samples += time_interleaved({"fn": fn}, device, 0, max(repeats // 4, 1), calls_per_sample)["fn"]
    return samples


def time_interleaved(fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int,
                     calls_per_sample: int = 1) -> dict[str, list[float]]:
    """`time_calls` for several functions, their samples taken in turn (a, b, c, a, b, c, ...), so
    that a machine whose load changes during the run disturbs each of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    cuda = device.type == "cuda"
    samples: dict[str, list] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            else:
                began = time.perf_counter()
            for _ in range(calls_per_sample):
                fn()
            if cuda:
                end.record()
                samples[name].append((start, end))
            else:
                samples[name].append((time.perf_counter() - began) * 1e3 / calls_per_sample)
    sync(device)
    if cuda:
        return {name: [start.elapsed_time(end) / calls_per_sample for start, end in pairs]
                for name, pairs in samples.items()}
    return samples


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): the smallest value with at least q% of values at or below it."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)), 1) - 1]


def summarize(times_ms: list[float], queries: int) -> dict[str, float]:
    """p50 (median), p99 and queries per second at the median."""
    p50 = statistics.median(times_ms)
    return {"p50_ms": p50, "p99_ms": percentile(times_ms, 99), "queries_per_s": queries / p50 * 1e3}


def cpu_description() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), its cores, and the vector and
    matrix extensions that decide CPU speed (AVX-512, its bf16, AMX)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        flags = set(next(line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")))
    except (OSError, StopIteration):
        pass
    extensions = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name}, {os.cpu_count()} cores" + (f" ({' '.join(extensions)})" if extensions else "")


def environment(device: torch.device) -> dict:
    """GPU name (None on CPU), library versions, date and host."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    on_gpu = device.type == "cuda"
    return {"gpu": torch.cuda.get_device_name(device) if on_gpu else None,
            "device": str(device),
            "cpu": cpu_description(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton_version,
            "torch_threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"),
            "timing": "CUDA events per call after warm-up" if on_gpu
            else "time.perf_counter per call after warm-up (CPU: not a GPU result)"}
