"""Localizer timing: the reference predictor (eager) vs the compiled fallback, and TensorRT when it
imports, in one process on the same inputs, timed per call with CUDA events after warm-up.

    python -m bench.localizer_timing [--checkpoint F.safetensors] [--dtype bf16] --out results.json

Every row also records the implementation's logits relative error and index agreement against
the eager reference on the same inputs. Without a GPU it times on CPU with perf_counter (a smoke
run, not a result); an implementation that cannot run here gets a row with `skipped` and no times.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from bench.timing import environment, summarize, time_calls
from engine.compile.compiled_localizer import make_localizer
from engine.compile.trt import TrtError
from engine.io.checkpoint import load_checkpoint
from reference.config import SeqPANConfig
from reference.localizer import LocalizerOutput
from reference.model import SeqPAN
from reference.ops import weights_device, weights_dtype
from reference.precision import EXPORT_PRECISIONS, PRECISIONS
from reference.testing import random_model

IMPLS = ("eager", "compiled", "tensorrt")
DEFAULT_SHAPES = ((1, 64), (64, 64), (1024, 64), (256, 256))  # (batch, clips)


def agreement(out: LocalizerOutput, ref: LocalizerOutput, mask: torch.Tensor) -> dict:
    """Logits relative error over valid positions and the fraction of equal start/end indices."""
    errors = []
    for name in ("start_logits", "end_logits"):
        got, want = getattr(out, name)[mask].double(), getattr(ref, name)[mask].double()
        errors.append(float((got - want).norm() / want.norm().clamp_min(1e-30)))
    same = (out.start_index == ref.start_index) & (out.end_index == ref.end_index)
    return {"logits_rel_err": max(errors), "index_agreement": float(same.double().mean())}


def time_localizers(model: SeqPAN, shapes=DEFAULT_SHAPES, impls=IMPLS, padding: str = "isolated",
                    warmup: int = 10, iters: int = 50, seed: int = 0) -> list[dict]:
    """One row per (implementation, shape): latency percentiles, queries/s and agreement with eager."""
    device, dtype = weights_device(model), weights_dtype(model)
    localizers, skipped = {}, {}
    for impl in impls:
        try:
            localizers[impl], _ = make_localizer(model, prefer=impl)
        except TrtError as err:
            skipped[impl] = str(err)
    generator = torch.Generator().manual_seed(seed)
    rows = [{"impl": impl, "skipped": reason} for impl, reason in skipped.items()]
    with torch.no_grad():
        for batch, length in shapes:
            x = torch.randn(batch, length, model.cfg.dim, generator=generator).to(device, dtype)
            lengths = torch.randint(1, length + 1, (batch,), generator=generator)
            lengths[0] = length
            mask = (torch.arange(length)[None, :] < lengths[:, None]).to(device)
            conv_mask = mask if padding == "isolated" else None
            reference = model.predictor(x, mask, conv_mask)
            for impl, localizer in localizers.items():
                def call(localizer=localizer, x=x, mask=mask, conv_mask=conv_mask):
                    return localizer(x, mask, conv_mask)

                rows.append({"impl": impl, "batch": batch, "length": length, "padding": padding,
                             "dtype": str(dtype).removeprefix("torch."),
                             **summarize(time_calls(call, device, warmup, iters), batch),
                             **agreement(call(), reference, mask)})
    return rows


def tensorrt_version() -> str | None:
    """The installed TensorRT's version, None when it does not import."""
    try:
        import tensorrt
    except (ImportError, OSError):
        return None
    return tensorrt.__version__


def parse_shapes(text: str) -> tuple[tuple[int, int], ...]:
    """Parse "1x64,256x256" into ((1, 64), (256, 256))."""
    try:
        return tuple((int(b), int(n)) for b, n in (item.split("x") for item in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shapes look like 1x64,256x256, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="native checkpoint (default: random full-size weights)")
    parser.add_argument("--shapes", type=parse_shapes, default=DEFAULT_SHAPES, help="BxN,... (default %(default)s)")
    parser.add_argument("--impl", action="append", choices=IMPLS, help="repeatable (default: all)")
    parser.add_argument("--padding", default="isolated", choices=["batch", "isolated"])
    parser.add_argument("--dtype", default="fp32", choices=EXPORT_PRECISIONS)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--out", help="write the JSON here (default: stdout only)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        print("no CUDA GPU: timing on CPU with perf_counter (a smoke run, not a result)", file=sys.stderr)
    longest = max(n for _, n in args.shapes)
    model = load_checkpoint(args.checkpoint).model if args.checkpoint else random_model(SeqPANConfig(num_words=100, num_chars=50, max_pos_len=longest))
    model = model.to(device, PRECISIONS[args.dtype].dtype)
    rows = time_localizers(model, args.shapes, tuple(args.impl or IMPLS), args.padding, args.warmup, args.iters)
    result = {"environment": {**environment(device), "tensorrt": tensorrt_version()}, "rows": rows}
    for row in rows:
        if "skipped" in row:
            print(f"{row['impl']:>9}  skipped: {row['skipped']}")
        else:
            print(f"{row['impl']:>9}  B={row['batch']:<5} N={row['length']:<4} p50 {row['p50_ms']:8.3f} ms  "
                  f"{row['queries_per_s']:>10.0f} q/s  err {row['logits_rel_err']:.1e}  "
                  f"idx {row['index_agreement']:.3f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    else:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
