"""Compile the kernels for an NVIDIA GPU on a machine without one, and read what each needs.

Inside `cross_compiling()`, Triton's active driver is a stand-in for an sm_90 GPU (H100/H200):
each kernel launch compiles with Triton's own compiler and bundled ptxas for that target, with
the argument specialisation a launch on the GPU would get, records what the kernel needs and runs
nothing. Shared memory comes from the compiled metadata (the number Triton's launcher compares
with the device's limit); registers and the per-thread stack frame (spilled registers) from
`cuobjdump -res-usage` of the cubin.

The kernels must have been imported without TRITON_INTERPRET, so `probe` runs the calls in
subprocesses (`python -m kernels.cross_compile CALLS.json OUT.json`). `default_calls` lists the
module calls that launch every configuration the `triton` backend can choose.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from reference.precision import PRECISIONS

from .settings import KERNELS, REFERENCE_DIM, Settings, calculate_settings

H100_SHARED_MEMORY = 232_448  # bytes of shared memory one block may use on sm_90 (H100, H200)
SPILL_BUDGET = 2048  # bytes of stack (spilled registers) per thread the settings may reach
TARGET = ("cuda", 90, 64)  # triton GPUTarget: backend, compute capability, warp size
DIMS = (16, 32, 64, 128, 256)
MODULES = (*KERNELS, "span")
ASK_LARGEST = 1 << 20  # a block request every clamp brings down to its largest
# Address space of a compiler worker and its ptxas: a configuration far too large fails to compile
# instead of exhausting the machine (ptxas took 16 GB on an IEEE fp32 CQA with 256-row blocks).
WORKER_MEMORY = 8 << 30


@dataclass(frozen=True)
class Call:
    """One call of a kernel module: `module` (a KERNELS name, or "span" for span decoding) built for
    a random block of `dim` (16-wide heads) at `precision`, on one sample of `lengths` (rows, and
    keys / words where the module takes a second sequence), with the module's keyword `options`;
    `masked`: the conv block gets a mask (isolated padding) or none (batch padding); `settings`:
    Settings fields that replace what the module would choose (to measure what the clamps refuse)."""
    module: str
    precision: str
    dim: int
    lengths: tuple[int, int]
    options: tuple[tuple[str, object], ...] = ()
    masked: bool = True
    settings: tuple[tuple[str, object], ...] | None = None  # replaces the module's settings (unclamped)


@dataclass
class KernelResources:
    """What one compiled kernel needs: shared memory per block (bytes), registers per thread and
    the per-thread stack frame (bytes of local memory, spilled registers)."""
    kernel: str
    dtype: str  # Triton's type of the first argument (the activations), e.g. "*bf16"
    constants: dict  # the constexpr arguments by name
    num_warps: int
    num_stages: int
    shared: int
    registers: int
    stack: int
    calls: list[Call] = field(default_factory=list)  # the calls that launched it
    compile_cpu_s: float = 0.0  # CPU seconds (Triton and ptxas) of the call that compiled it first

    @property
    def key(self) -> tuple:
        return self.kernel, self.dtype, tuple(sorted(self.constants.items())), self.num_warps, self.num_stages

    def over_limits(self) -> list[str]:
        """Why this kernel cannot launch on sm_90 or breaks the spill budget (empty: it is fine)."""
        reasons = []
        if self.shared > H100_SHARED_MEMORY:
            reasons.append(f"shared memory {self.shared} B > {H100_SHARED_MEMORY} B")
        if self.stack > SPILL_BUDGET:
            reasons.append(f"stack {self.stack} B > {SPILL_BUDGET} B per thread")
        return reasons


def _res_usage(cubin: bytes) -> tuple[int, int]:
    """(registers, stack bytes) of the one function in a cubin, from cuobjdump -res-usage."""
    import triton

    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([triton.knobs.nvidia.cuobjdump.path, "-res-usage", f.name], capture_output=True,
                             text=True, check=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+)", out)
    if found is None:
        raise RuntimeError(f"no resource usage in cuobjdump's output:\n{out}")
    return int(found[1]), int(found[2])


@contextlib.contextmanager
def cross_compiling() -> Iterator[list[KernelResources]]:
    """Within: kernel launches compile for sm_90 and append their KernelResources to the list
    yielded (one per launch); nothing runs, so outputs stay as allocated."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver

    records: list[KernelResources] = []
    pending: list = []

    class Utils:
        def get_device_properties(self, device):  # no limit here: the caller compares the records
            return dict(max_shared_mem=2**31, multiprocessor_count=132, max_num_regs=65536, warpSize=32)

        def load_binary(self, name, cubin, shared, device):  # no module: every launch loads (records) again
            src, metadata = pending.pop()
            registers, stack = _res_usage(cubin)
            constants = {src.fn.arg_names[path[0]]: value for path, value in src.constants.items()}
            records.append(KernelResources(name, next(iter(src.signature.values())), constants, metadata.num_warps,
                                           metadata.num_stages, shared, registers, stack))
            return None, None, registers, stack // 4, 1024

        def unload_module(self, module):
            pass

    class Launcher:  # built just before load_binary by the compiled kernel; launching is a no-op
        def __init__(self, src, metadata):
            pending.append((src, metadata))

        def __call__(self, *args):
            pass

    class StandIn:
        utils = Utils()
        launcher_cls = Launcher

        def get_current_target(self):
            return GPUTarget(*TARGET)

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_active_torch_device(self):
            return torch.device("cpu")

    if triton.knobs.runtime.interpret:
        raise RuntimeError("cross-compiling needs the kernels imported without TRITON_INTERPRET")
    previous = getattr(driver, "_active", None)  # None: chosen on first use (there may be no GPU driver)
    driver.set_active(StandIn())
    try:
        yield records
    finally:
        driver.set_active(previous)


def _module(call: Call) -> torch.nn.Module:
    from reference.config import SeqPANConfig
    from reference.conv_block import ConvBlock
    from reference.cqa import ContextQueryAttention, PoolConcat
    from reference.sgpa import SGPALayer

    from .conv_block import FusedConvBlock
    from .cqa import FusedCQA, FusedPoolConcat
    from .sgpa import FusedSGPALayer

    cfg = SeqPANConfig(num_words=4, num_chars=4, dim=call.dim, num_heads=call.dim // 16)
    reference, fused = {"conv_block": (ConvBlock, FusedConvBlock), "sgpa": (SGPALayer, FusedSGPALayer),
                        "cqa": (ContextQueryAttention, FusedCQA), "pool_concat": (PoolConcat, FusedPoolConcat)}[
        call.module]
    module = fused(reference(cfg), PRECISIONS[call.precision].dot == "tf32", **dict(call.options))
    if call.settings is not None:
        module.settings = lambda dtype: Settings(**dict(call.settings))
    return module


def run_call(call: Call) -> None:
    """Make `call` on zero inputs (under `cross_compiling`, this compiles what it launches)."""
    from .span import decode_span

    dtype = PRECISIONS[call.precision].dtype
    n, m = call.lengths
    x, y = torch.zeros(1, n, call.dim, dtype=dtype), torch.zeros(1, m, call.dim, dtype=dtype)
    x_mask, y_mask = torch.ones(1, n, dtype=torch.bool), torch.ones(1, m, dtype=torch.bool)
    with torch.no_grad():
        if call.module == "span":
            decode_span(x[..., 0], x[..., 0], x_mask)
            return
        module = _module(call)
        if call.module == "conv_block":
            module(x, x_mask if call.masked else None)
        elif call.module == "pool_concat":
            module(x, y, y_mask)
        else:
            module(x, y, x_mask, y_mask)


def compile_calls(calls: Sequence[Call], done: Callable[[Call], None] | None = None
                  ) -> tuple[list[KernelResources], dict[Call, str]]:
    """Every distinct kernel configuration the calls launch, compiled for sm_90, in first-launch
    order, and the calls that failed with why (`done` is told of each call made)."""
    found: dict[tuple, KernelResources] = {}
    failed: dict[Call, str] = {}
    for call in calls:
        cpu = _cpu_seconds()
        with cross_compiling() as records:
            try:
                run_call(call)
            except Exception as err:  # noqa: BLE001 - a configuration that does not compile is a finding
                failed[call] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}"
        cpu = _cpu_seconds() - cpu
        new = {r.key: r for r in records if r.key not in found}
        for record in records:
            found.setdefault(record.key, record).calls.append(call)
        for record in new.values():  # a call that compiles several kernels: its time shared among them
            record.compile_cpu_s = round(cpu / len(new), 2)
        if done:
            done(call)
    return list(found.values()), failed


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (ptxas, cuobjdump)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _block_options(module: str, rows: int, keys: int) -> dict:
    """A module's keyword options asking for these row / key caps."""
    if module == "conv_block":
        return dict(tile_rows=rows)
    return dict(block_rows=rows, block_keys=keys) if module == "sgpa" else dict(block_rows=rows, block_words=keys)


def module_calls(module: str, precision: str, dim: int, stage: bool | None = None, largest: bool = False,
                 every_block: bool = False) -> list[Call]:
    """Calls of `module` that launch its configurations at one precision, dim and stage request,
    with the default blocks or the largest a user may ask for (as kernels.settings chooses them):
    on sequences of every block size up to the caps and one longer (every_block), or as long as
    the caps and one longer (one block, several blocks)."""
    if module == "span":
        return [Call("span", precision, 16, (n, n)) for n in (16, 64, 256, 1024)]
    options = {} if stage is None else {"stage": stage}
    if largest:
        options |= _block_options(module, ASK_LARGEST, ASK_LARGEST)
    dtype, dot, _ = PRECISIONS[precision]
    chosen = calculate_settings(module, dtype, dot, dim, options.get("tile_rows", options.get("block_rows")),
                                options.get("block_keys", options.get("block_words")), stage, interpreted=False)
    cap = max(chosen.rows, chosen.keys)
    lengths = [16 << i for i in range(cap.bit_length() - 4)] if every_block else [cap]
    lengths.append(cap + 1)
    options_t = tuple(sorted(options.items()))
    if module == "conv_block":
        return [Call(module, precision, dim, (n, 1), options_t, masked) for n in lengths for masked in (True, False)]
    return [Call(module, precision, dim, (n, m), options_t) for n in lengths for m in lengths]


def default_calls(dims: Sequence[int] = DIMS, precisions: Sequence[str] = tuple(PRECISIONS),
                  modules: Sequence[str] = MODULES) -> list[Call]:
    """Calls that launch every configuration the `triton` backend can choose: at SeqPAN's dim every
    block size of the defaults; at every dim the defaults at their caps and the largest blocks a
    user may ask for; each staged and unstaged where both can be chosen. fp16 compiles the same
    code as bf16 at the same width, so it is compiled at SeqPAN's dim only."""
    calls: list[Call] = []
    for precision in precisions:
        for module in modules:
            if module == "span":
                calls += module_calls(module, precision, 0)
                continue
            for dim in dims if precision != "fp16" else (REFERENCE_DIM,):
                for stage in (None,) if precision == "fp32" else (False, True):
                    calls += module_calls(module, precision, dim, stage, every_block=dim == REFERENCE_DIM and not stage)
                    calls += module_calls(module, precision, dim, stage, largest=True)
    return list(dict.fromkeys(calls))


def probe(calls: Sequence[Call], workers: int = 1, timeout: float | None = None,
          progress: Callable[[int], None] | None = None) -> tuple[list[KernelResources], dict[Call, str]]:
    """`compile_calls` shared among `workers` fresh subprocesses (without TRITON_INTERPRET, each
    limited to WORKER_MEMORY of address space), merged in the order of the calls; `progress` is
    told how many more calls are done, about every second."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.6's default, stated (3.9 warns without it)
    shares = [list(calls[i::workers]) for i in range(workers) if calls[i::workers]]
    with tempfile.TemporaryDirectory() as tmp:
        work = [(Path(tmp) / f"calls{i}.json", Path(tmp) / f"out{i}.json") for i in range(len(shares))]
        for (calls_path, _), share in zip(work, shares):
            calls_path.write_text(json.dumps([asdict(c) for c in share]))
        procs = []
        for c, o in work:
            with open(o.with_suffix(".err"), "w") as err:  # the child keeps its own copy of the handle
                procs.append(subprocess.Popen([sys.executable, "-m", "kernels.cross_compile", str(c), str(o)],
                                              stderr=err, env=env))
        try:
            _wait(procs, [o for _, o in work], timeout, progress)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
        found: dict[tuple, KernelResources] = {}
        failed: dict[Call, str] = {}
        for _, out_path in work:
            out = json.loads(out_path.read_text())
            for row in out["resources"]:
                record = KernelResources(**{**row, "calls": [_call(c) for c in row["calls"]]})
                found.setdefault(record.key, replace(record, calls=[])).calls.extend(record.calls)
            failed |= {_call(call): why for call, why in out["failed"]}
    order = {call: i for i, call in enumerate(calls)}
    return sorted(found.values(), key=lambda r: min(order[c] for c in r.calls)), failed


def _wait(procs: list[subprocess.Popen], outputs: list[Path], timeout: float | None,
          progress: Callable[[int], None] | None) -> None:
    """Wait for the workers writing `outputs`, reporting progress from their .done files."""
    start, reported = time.monotonic(), 0
    while any(proc.poll() is None for proc in procs):
        if timeout is not None and time.monotonic() - start > timeout:
            raise TimeoutError(f"cross-compiling took over {timeout:.0f} s")
        time.sleep(1)
        done = sum(len(f.read_text()) for f in (o.with_suffix(".done") for o in outputs) if f.exists())
        if progress and done > reported:
            progress(done - reported)
            reported = done
    for proc, out in zip(procs, outputs):
        if proc.returncode:
            err = out.with_suffix(".err").read_text()[-4000:]
            raise RuntimeError(f"cross-compiling failed (exit {proc.returncode}):\n{err}")


def _call(row: dict) -> Call:
    settings = row.get("settings")
    return Call(row["module"], row["precision"], row["dim"], tuple(row["lengths"]),
                tuple((k, v) for k, v in row["options"]), row["masked"],
                None if settings is None else tuple((k, v) for k, v in settings))


def main(argv: list[str] | None = None) -> None:
    """Worker: compile the calls in CALLS.json, write the resources and failures to OUT.json and
    one byte per call made to OUT.done."""
    import resource

    calls_path, out_path = map(Path, argv or sys.argv[1:])
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))  # ptxas inherits it
    calls = [_call(row) for row in json.loads(calls_path.read_text())]
    with open(out_path.with_suffix(".done"), "w") as done:
        found, failed = compile_calls(calls, lambda call: (done.write("."), done.flush()))
    out_path.write_text(json.dumps({"resources": [asdict(r) for r in found],
                                    "failed": [[asdict(c), why] for c, why in failed.items()]}))


if __name__ == "__main__":
    main()
