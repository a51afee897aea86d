"""Devices and what "auto" picks on each: the device, the precision, the backend; and bf16 autocast.
The one copy of these rules, low in the engine core (torch only), for the engine, the server, video/
and the benchmarks."""
from __future__ import annotations

import logging
import os
from functools import cache

import torch

from .errors import BackendError

DEVICE_TYPES = ("cpu", "cuda")
log = logging.getLogger(__name__)


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


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> bf16 on a CUDA GPU, fp32 on the CPU; any other name as it is."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" else "fp32"


def resolve_backend(backend: str, device: torch.device) -> str:
    """"auto" -> what the engine runs on `device` (`auto_backend_name`); any other name as it is."""
    return auto_backend_name(device) if backend == "auto" else backend


def available_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def engine_threads(threads: int | None, backend: str, device: torch.device) -> dict | None:
    """Hold an engine to `threads` CPU threads: torch's are set now, and the returned backend options
    give the openvino backend's own pool the same (None: the options to pass for any other backend,
    or when `threads` is None, which leaves both at their defaults)."""
    if threads is None:
        return None
    torch.set_num_threads(threads)
    return {"threads": threads} if resolve_backend(backend, device) == "openvino" else None


def auto_backend_name(device: torch.device) -> str:
    """What the engine runs: the Triton kernels on a CUDA GPU; on CPU the whole model compiled by
    OpenVINO, or the reference (saying so once) when OpenVINO does not import."""
    if device.type == "cuda":
        return "triton"
    return "openvino" if openvino_imports() else "reference"


@cache
def openvino_imports() -> bool:
    """Whether OpenVINO (the CPU fast path's runtime) imports; when it does not, says so once, in one line."""
    try:
        import openvino  # noqa: F401 (whether it imports is the question)
    except ImportError as err:
        log.warning("seqpan: OpenVINO does not import (%s); the CPU engine runs the slower reference "
                    "(pip install openvino)", err)
        return False
    return True


def autocast(device: torch.device, precision: str, backend: str = "reference"):
    """bf16 = torch.autocast(bfloat16) over fp32 weights, for the reference backend (GPU and CPU);
    kernels and compiled backends handle their own precision."""
    enabled = precision == "bf16" and backend == "reference"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)
