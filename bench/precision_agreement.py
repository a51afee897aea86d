"""How often the engine's answers in one precision equal its fp32 answers, on a trained model and
its held-out queries (the `seqpan demo` run by default):

    python -m bench.precision_agreement [--demo runs/demo] [--precision bf16] [--out FILE.json]

Prints (and writes, with --out) the share of queries whose (start, end) indices equal fp32's, the
share within one clip, and R@1 at IoU 0.5 in both precisions.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from engine import GroundingEngine, GroundingRequest
from engine.data.dataset import encode_records, load_video_features, read_annotations
from engine.data.metrics import score_moments
from engine.io.atomic import write_atomically
from engine.io.checkpoint import load_checkpoint

from .timing import environment


def agreement(demo: Path, precision: str = "bf16", backend: str = "auto") -> dict:
    """fp32 vs `precision` answers of the engine on the demo's held-out queries."""
    ckpt = load_checkpoint(demo / "best.safetensors")
    cfg = ckpt.model.cfg
    records = read_annotations(demo / "data" / "test.txt", "charades", demo / "data" / "durations.json")
    features, _ = load_video_features(demo / "data" / "features", [r.vid for r in records], cfg.max_pos_len,
                                      cfg.visual_dim)
    samples = encode_records(records, features, ckpt.word_dict, ckpt.char_dict, cfg.max_pos_len)
    requests = [GroundingRequest(features[x.record.vid], x.record.sentence, x.record.duration, video_id=x.record.vid,
                                 id=i) for i, x in enumerate(samples)]
    answers, names = {}, {}
    for name in ("fp32", precision):
        engine = GroundingEngine(ckpt.model, ckpt.word_dict, ckpt.char_dict, device="cpu", precision=name,
                                 backend=backend, max_batch=64)
        answers[name], names[name] = engine.ground(requests), engine.description
    fp32, other = answers["fp32"], answers[precision]
    truth = [(x.record.start, x.record.end) for x in samples]
    equal = sum((a.start_index, a.end_index) == (b.start_index, b.end_index) for a, b in zip(fp32, other))
    near = sum(abs(a.start_index - b.start_index) <= 1 and abs(a.end_index - b.end_index) <= 1
               for a, b in zip(fp32, other))
    return {"checkpoint": str(demo / "best.safetensors"), "queries": len(samples), "engines": names,
            "indices_equal": equal / len(samples), "within_one_clip": near / len(samples),
            "r1_iou05": {name: score_moments([(r.start, r.end) for r in answers[name]], truth)["r1_iou05"]
                         for name in answers},
            "cpu": environment(torch.device("cpu"))["cpu"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="runs/demo", help="a `seqpan demo --out` folder (default %(default)s)")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--out", help="also write the result here (JSON)")
    args = parser.parse_args(argv)
    result = agreement(Path(args.demo), args.precision, args.backend)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        write_atomically(Path(args.out), lambda tmp: Path(tmp).write_text(text + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
