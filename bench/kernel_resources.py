"""Compile-time resource table of the Triton kernels for sm_90 (H100/H200), made without a GPU.

    python -m bench.kernel_resources [--workers 2] [--out-dir bench/results]

Compiles every configuration the `triton` backend can choose (kernels.cross_compile.default_calls:
each precision, staged and unstaged, every block size at SeqPAN's dim, the default and the largest
blocks at dims 16-256), plus the configurations the settings used to choose and now refuse, with
Triton's own compiler and bundled ptxas, and writes kernel-resources-sm90.json and .md: shared
memory, registers and stack (spills) per kernel and configuration, against the limits. A first GPU
run reads its timings against it. Takes about an hour on 2 cores (Triton's cache makes reruns quick).
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from bench import timing
from engine.io.atomic import write_atomically
from kernels.cross_compile import (
    H100_SHARED_MEMORY,
    SPILL_BUDGET,
    TARGET,
    Call,
    KernelResources,
    default_calls,
    probe,
)
from kernels.settings import Settings

STEM = "kernel-resources-sm90"


def _old(module: str, precision: str, dim: int, lengths: tuple[int, int], **settings) -> Call:
    dot = "tf32" if precision == "tf32" else "ieee"
    return Call(module, precision, dim, lengths, settings=tuple(vars(Settings(**settings, dot=dot)).items()))


# What the kernels launched with before kernels.settings (issue 15), measured to show what it fixed.
# (An IEEE fp32 CQA with 256-row / 256-word blocks is left out: its ptxas needed over 16 GB.)
REFUSED = {
    "conv block, tf32, unstaged 64-row tiles, 3 pipelining stages": _old(
        "conv_block", "tf32", 128, (65, 1), rows=64, keys=0, stage=False, num_warps=8, num_stages=3),
    "SGPA, fp32, 64-row / 64-key blocks": _old(
        "sgpa", "fp32", 128, (65, 65), rows=64, keys=64, stage=True, num_warps=8, num_stages=3),
    "CQA, bf16, 256-row / 256-word blocks": _old(
        "cqa", "bf16", 128, (256, 256), rows=256, keys=256, stage=False, num_warps=8, num_stages=3),
    "conv block, fp32, 256-row tiles": _old(
        "conv_block", "fp32", 128, (257, 1), rows=256, keys=0, stage=True, num_warps=8, num_stages=3),
}


def environment() -> dict:
    import torch
    import triton

    ptxas = subprocess.run([triton.knobs.nvidia.ptxas.path, "--version"], capture_output=True, text=True).stdout
    return dict(target=f"sm_{TARGET[1]} (H100 / H200), compiled without a GPU",
                compiled_on=timing.environment(torch.device("cpu"))["cpu"],
                triton=triton.__version__, ptxas=ptxas.strip().splitlines()[-1], torch=torch.__version__,
                date=datetime.date.today().isoformat(),
                limits=dict(shared_bytes=H100_SHARED_MEMORY, stack_bytes_per_thread=SPILL_BUDGET))


def row(record: KernelResources) -> dict:
    """One configuration: the kernel, its constexprs and launch options, what it needs, and the
    first of the calls that launch it."""
    first = record.calls[0]
    return dict(kernel=record.kernel, dtype=record.dtype, precision=first.precision,
                constants={k: v for k, v in record.constants.items() if k not in ("EPS", "SCALE")},
                num_warps=record.num_warps, num_stages=record.num_stages, shared_bytes=record.shared,
                registers=record.registers, stack_bytes=record.stack, over_limits=record.over_limits(),
                compile_cpu_s=record.compile_cpu_s, calls=len(record.calls), first_call=asdict(first))


def markdown(report: dict) -> str:
    env = report["env"]
    lines = [f"# Kernel resources on {env['target']}", "",
             f"Compiled on {env['compiled_on']} with Triton {env['triton']} ({env['ptxas']}), torch {env['torch']}, "
             f"{env['date']}, in {report['seconds']:.0f} s. Regenerate: `python -m bench.kernel_resources`.", "",
             f"Limits: {env['limits']['shared_bytes']:,} B of shared memory per block (what Triton's launcher "
             f"checks); {env['limits']['stack_bytes_per_thread']:,} B of stack (spilled registers) per thread, "
             "the budget kernels.settings keeps to. Registers: per thread (255 at most). Stack: local memory "
             "per thread, from `cuobjdump -res-usage`.", "",
             f"{len(report['configs'])} configurations, {sum(bool(r['over_limits']) for r in report['configs'])} "
             f"over a limit; {len(report['failed'])} calls failed to compile.", ""]
    for failure in report["failed"]:
        lines.append(f"- failed: `{failure['call']}`: {failure['error']}")
    header = ["kernel", "precision", "constexprs", "warps", "stages", "shared B", "regs", "stack B", "limits"]

    def table(rows: Sequence[dict], first: str = "") -> list[str]:
        out = [f"| {first or header[0]} | " + " | ".join(header[1:]) + " |", "|" + "---|" * len(header)]
        for r in rows:
            consts = ", ".join(f"{k}={v}" for k, v in r["constants"].items() if k != "PREC")
            out.append(f"| {r.get('name', r['kernel'])} | {r['precision']} | {consts} | {r['num_warps']} | "
                       f"{r['num_stages']} | {r['shared_bytes']:,} | {r['registers']} | {r['stack_bytes']:,} | "
                       f"{'; '.join(r['over_limits']) or 'ok'} |")
        return out

    lines += ["## What the settings refuse (the old settings, issue 15)", ""]
    lines += table(report["refused"], "case") + [""]
    for kernel in dict.fromkeys(r["kernel"] for r in report["configs"]):
        rows = sorted((r for r in report["configs"] if r["kernel"] == kernel),
                      key=lambda r: (r["precision"], sorted(r["constants"].items(), key=str)))
        worst = max(rows, key=lambda r: r["shared_bytes"])
        spills = max(rows, key=lambda r: r["stack_bytes"])
        lines += [f"## {kernel}", "", f"{len(rows)} configurations; most shared memory {worst['shared_bytes']:,} B, "
                  f"most stack {spills['stack_bytes']:,} B per thread.", ""]
        lines += table(rows) + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="compiler processes (default 2)")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    calls = [*default_calls(), *REFUSED.values()]
    with tqdm(total=len(calls), desc="compiling for sm_90", unit="call") as bar:
        records, failed = probe(calls, args.workers, progress=bar.update)
    names = {call: name for name, call in REFUSED.items()}
    refused = [{**row(r), "name": names[c]} for r in records for c in r.calls if c in names]
    report = dict(env=environment(), seconds=time.perf_counter() - start, refused=refused,
                  configs=[row(r) for r in records if not any(c in names for c in r.calls)],
                  failed=[dict(call=asdict(c), error=why) for c, why in failed.items()])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(report, indent=1)), (".md", markdown(report))):
        write_atomically(args.out_dir / f"{STEM}{suffix}", lambda tmp, text=text: Path(tmp).write_text(text + "\n"))
    over = sum(bool(r["over_limits"]) for r in report["configs"])
    print(f"{len(report['configs'])} configurations, {over} over a limit, {len(failed)} calls failed; "
          f"wrote {args.out_dir / STEM}.json/.md")
    raise SystemExit(1 if over or set(failed) - set(names) else 0)


if __name__ == "__main__":
    main()
