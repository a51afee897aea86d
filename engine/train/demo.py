"""The end-to-end demo: real Charades-STA queries, synthesized features, a small model trained on
CPU in minutes, held-out grounding scored against a position-only baseline."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from reference.config import preset

from ..data.dataset import build_dataset, read_annotations
from ..data.metrics import iou
from ..data.synth import build_synthetic_charades, position_baselines
from ..io.checkpoint import load_checkpoint
from .evaluate import evaluate_records
from .trainer import Schedule, Trainer

# Small enough to train on two CPU cores in a few minutes (half the width, half the conv
# layers, one SGPA layer, 32 clips); the training recipe is the original's but for lr.
DEMO_MODEL = {"max_pos_len": 32, "dim": 64, "num_heads": 4, "conv_layers": 2, "attn_layer": 1}
DEMO_SCHEDULE = {"lr": 5e-4, "patience": 3}
DEFAULT_EPOCHS = 8
NUM_EXAMPLES = 5


def run_demo(out: str | Path = "runs/demo", seconds: float | None = 270.0, epochs: int | None = None,
             seed: int = 0, device: str | torch.device = "cpu", log: Callable[[str], None] = print) -> dict:
    """Build the dataset, train (until `epochs` or the `seconds` budget), ground the held-out
    videos' queries; returns the summary that `seqpan demo --json` prints."""
    began = time.monotonic()
    out = Path(out)
    synth = build_synthetic_charades(out / "data", seed=seed)
    records = {name: read_annotations(path, "charades", synth.durations) for name, path in synth.splits.items()}
    log(f"dataset: {', '.join(f'{len(r)} {name}' for name, r in records.items())} queries "
        f"(Charades-STA test, split by video), synthesized features under {synth.root}")
    data = build_dataset(synth.features, records["train"], records["val"], DEMO_MODEL["max_pos_len"],
                         glove=synth.glove, seed=seed)
    cfg = preset("charades", len(data.word_dict), len(data.char_dict), **DEMO_MODEL)
    schedule = Schedule(epochs=epochs or DEFAULT_EPOCHS, seed=seed, **DEMO_SCHEDULE)
    trainer = Trainer.fresh(cfg, data, schedule, out, device)
    budget = None if seconds is None else max(0.0, seconds - (time.monotonic() - began))
    result = trainer.run(seconds=budget, log=log)
    log(f"trained {result.steps} steps ({result.stopped}); best checkpoint {result.best_path}")

    ckpt = load_checkpoint(result.best_path, device)
    evaluation, samples, _ = evaluate_records(ckpt.model, ckpt.word_dict, ckpt.char_dict, records["test"],
                                              synth.features, device)
    baselines = position_baselines(records["train"], records["test"], cfg.max_pos_len)
    metrics = evaluation.metrics
    log(f"held-out ({len(samples)} queries of {len({s.record.vid for s in samples})} unseen videos): "
        + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    for name, scores in baselines.items():
        log(f"position-only baseline ({name}): r1_iou05 {scores['r1_iou05']:.4f}  miou {scores['miou']:.4f}")
    step = max(1, len(samples) // NUM_EXAMPLES)
    for sample, pred in list(zip(samples, evaluation.predictions))[::step][:NUM_EXAMPLES]:
        r = sample.record
        log(f"  {r.vid} {r.sentence!r}: true {r.start:.1f}-{r.end:.1f}s, predicted {pred[0]:.1f}-{pred[1]:.1f}s "
            f"(IoU {iou(pred, (r.start, r.end)):.2f})")
    return {**metrics,
            "baseline_r1_iou05": max(b["r1_iou05"] for b in baselines.values()),
            **{f"baseline_{name}_r1_iou05": b["r1_iou05"] for name, b in baselines.items()},
            "test_queries": len(samples), "train_queries": len(data.train), "steps": result.steps,
            "checkpoint": str(result.best_path), "seconds": round(time.monotonic() - began, 1)}
