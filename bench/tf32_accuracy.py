"""How accurate the kernels are with TF32 dots, per sample, for three ways of feeding the tensor core.

    TRITON_INTERPRET=1 python -m bench.tf32_accuracy [--benchmark-shape] [--out DIR]

A tensor core given fp32 operands for a TF32 dot ignores their 13 low mantissa bits (truncation).
Compared: `truncate` (operands as they are), `round` (operands rounded to nearest TF32 first, what
kernels.common.mm does) and `3xtf32` (each operand split into a TF32 part and a TF32 remainder,
three dots). Runs under Triton's interpreter, whose dots are IEEE fp32 and which therefore emulates
the truncation (kernels.common.mm); the float64 reference twins are the ground truth. Reports the
largest per-sample relative error of each block output against DESIGN's tf32 bound (1e-3), on the
shapes of the CPU tests (and of the GPU tests with --benchmark-shape: 256 samples, slow on CPU).
Writes tf32-accuracy-cpu.json and .md to DIR (default bench/results).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

MODES = ("truncate", "round", "3xtf32")


def dot_variant(mode: str) -> Callable:
    """kernels.common.mm with the operands of its TF32 dots fed as `mode` says (interpreter only)."""
    import triton.language as tl

    from kernels.common import cast, tf32_bits

    def mm(a, b, PREC):
        a = cast(a, b.dtype).to(tl.float32)
        b = b.to(tl.float32)
        if PREC != "tf32":
            return tl.dot(a, b, input_precision="ieee")

        def tensor_core(x, y):  # what the hardware multiplies: truncated operands
            return tl.dot(tf32_bits(x, False), tf32_bits(y, False), input_precision="ieee")

        if mode == "truncate":
            return tensor_core(a, b)
        a_big, b_big = tf32_bits(a, True), tf32_bits(b, True)
        if mode == "round":
            return tensor_core(a_big, b_big)
        return tensor_core(a - a_big, b_big) + tensor_core(a_big, b - b_big) + tensor_core(a_big, b_big)

    return mm


def use_dot(mode: str) -> None:
    """Make every kernel module's `mm` the `mode` variant (the interpreter looks globals up per call)."""
    import kernels.common
    import kernels.conv_block
    import kernels.cqa
    import kernels.sgpa

    for module in (kernels.common, kernels.conv_block, kernels.cqa, kernels.sgpa):
        module.mm = dot_variant(mode)


def worst_sample(out: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """(largest per-sample error over valid positions, error over the whole batch)."""
    from reference.ops import relative_error

    return (max(relative_error(out[i], ref[i], mask[i]) for i in range(out.shape[0])),
            relative_error(out, ref, mask))


def block_errors(v_lens: list[int], q_lens: list[int], seed: int, blocks: dict) -> dict[str, tuple[float, float]]:
    """Each block's outputs in both directions, tf32 against float64."""
    from kernels.conv_block import FusedConvBlock
    from kernels.cqa import FusedCQA
    from kernels.sgpa import FusedSGPALayer
    from reference.config import SeqPANConfig
    from reference.conv_block import ConvBlock
    from reference.cqa import ContextQueryAttention
    from reference.sgpa import SGPALayer
    from reference.testing import init_like_trained, ragged_mask

    cfg = SeqPANConfig(num_words=4, num_chars=4, dim=128, num_heads=8)
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(len(v_lens), max(v_lens), 128, generator=gen)
    q = torch.randn(len(q_lens), max(q_lens), 128, generator=gen)
    v_mask, q_mask = ragged_mask(v_lens), ragged_mask(q_lens)
    pairs = ((v, q, v_mask, q_mask), (q, v, q_mask, v_mask))
    out = {}
    with torch.no_grad():
        conv = init_like_trained(ConvBlock(cfg), seed)
        out["conv_block"] = worst_sample(FusedConvBlock(conv, True)(v, v_mask), copy.deepcopy(conv).double()(
            v.double(), v_mask), v_mask)
        sgpa = init_like_trained(SGPALayer(cfg), seed)
        fused, ref = FusedSGPALayer(sgpa, True, **blocks), copy.deepcopy(sgpa).double()
        for name, (x, y, xm, ym) in zip(("sgpa video", "sgpa query"), pairs):
            out[name] = worst_sample(fused(x, y, xm, ym), ref(x.double(), y.double(), xm, ym), xm)
        cqa = init_like_trained(ContextQueryAttention(cfg), seed)
        fused, ref = FusedCQA(cqa, True, block_rows=blocks.get("block_rows")), copy.deepcopy(cqa).double()
        for name, (c, k, cm, km) in zip(("cqa q2v", "cqa v2q"), pairs):
            got, want = fused(c, k, cm, km), ref(c.double(), k.double(), cm, km)
            out[f"{name} output"] = worst_sample(got[0], want[0], cm)
            out[f"{name} similarity"] = worst_sample(got[1], want[1], cm)
    return out


def markdown(report: dict) -> str:
    lines = [f"# TF32 accuracy of the kernels (interpreter, {report['machine']}, {report['date']})", "",
             "Largest per-sample relative error against float64 (whole-batch error in brackets); DESIGN's "
             "tf32 bound is 1e-3. Regenerate: `TRITON_INTERPRET=1 python -m bench.tf32_accuracy`.", ""]
    for shape, rows in report["shapes"].items():
        lines += [f"## {shape}", "", "| output | " + " | ".join(MODES) + " |", "|---|" + "---|" * len(MODES)]
        for name in next(iter(rows.values())):
            cells = [f"{rows[m][name][0]:.2e} ({rows[m][name][1]:.2e})" for m in MODES]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark-shape", action="store_true",
                        help="also the GPU tests' shape (256 samples of up to 64 clips; slow on CPU)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") != "1":
        parser.exit(2, "tf32_accuracy emulates the tensor core in Triton's interpreter: set TRITON_INTERPRET=1\n")
    from bench.timing import environment
    from engine.io.atomic import write_atomically

    shapes = {"CPU tests: videos 40, 1, 23 clips; queries 1, 9, 5 words": ([40, 1, 23], [1, 9, 5], 1,
                                                                       dict(block_rows=32, block_keys=32))}
    if args.benchmark_shape:
        lens = torch.randint(1, 65, (256,), generator=torch.Generator().manual_seed(0)).tolist()
        shapes["GPU tests: 256 videos of 1-64 clips, queries of 1-12 words"] = (
            [64, *lens[1:]], [12, *[1 + n % 12 for n in lens[1:]]], 0, {})
    report = dict(machine=environment(torch.device("cpu"))["cpu"], date=datetime.date.today().isoformat(), shapes={})
    for shape, (v_lens, q_lens, seed, blocks) in shapes.items():
        report["shapes"][shape] = {}
        for mode in MODES:
            use_dot(mode)
            report["shapes"][shape][mode] = block_errors(v_lens, q_lens, seed, blocks)
    for suffix, text in ((".json", json.dumps(report, indent=1)), (".md", markdown(report))):
        write_atomically(args.out / f"tf32-accuracy-cpu{suffix}", lambda tmp, t=text: Path(tmp).write_text(t + "\n"))
    print(markdown(report))


if __name__ == "__main__":
    main()
