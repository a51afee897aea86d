"""Training SeqPAN as the original does, with checkpoints that resume exactly.

The original's recipe: TF-default initialisers (Glorot-uniform weights, zero biases, unit
layer-norm scales, an orthogonal label embedding), frozen word vectors, loss =
localization + match_lambda * matching with Gumbel noise drawn every step, dropout, its
AdamWeightDecayOptimizer (Adam without bias correction, eps 1e-6, decoupled weight decay 0.01
on everything but layer norms and biases), lr = init_lr * (1 - epoch / epochs), gradients
clipped to global norm 1.0, batches of 16 padded `batch`-style, the validation split
evaluated twice per epoch and the best R@1 IoU=0.7 kept; early stopping after `patience`
epochs without improvement.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from reference.config import SeqPANConfig
from reference.losses import localization_loss, matching_loss
from reference.matching import gumbel_noise
from reference.model import SeqPAN
from reference.ops import check_padding

from ..data.dataset import Batch, Dataset, collate
from ..io.atomic import write_atomically
from ..io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .errors import TrainError
from .evaluate import evaluate_samples
from .optimizer import clip_by_global_norm, make_optimizer

EVALS_PER_EPOCH = 2
SELECTION_METRIC = "r1_iou07"


def init_weights(model: SeqPAN, word_vectors: np.ndarray, generator: torch.Generator) -> None:
    """The original's initial values: TF's Glorot-uniform default for every weight (fans of its
    TF variable's shape), zero biases, layer norms (1, 0), orthogonal label embeddings, and the
    given frozen word vectors."""
    norms = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
    with torch.no_grad():
        model.query_encoder.words.table.copy_(torch.from_numpy(np.asarray(word_vectors, dtype=np.float32)))
        for name, param in model.named_parameters():
            if id(param) in norms:
                param.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                param.zero_()
            elif name == "matcher.label_emb":
                nn.init.orthogonal_(param, generator=generator)
            else:
                shape = param.shape
                # 1-D: a [d, 1] (or [1, 1, d]) TF kernel; else PyTorch's [out, in, *window] layout
                fans = shape[0] + 1 if len(shape) == 1 else (shape[0] + shape[1]) * math.prod(shape[2:])
                limit = math.sqrt(6.0 / fans)
                param.uniform_(-limit, limit, generator=generator)


def training_loss(model: SeqPAN, batch: Batch, padding: str, noise_generator: torch.Generator) -> torch.Tensor:
    """localization + match_lambda * matching, with fresh Gumbel noise on the matching logits."""
    b, n = batch.video_len.shape[0], int(batch.video_len.max())
    noise = gumbel_noise((b, n, 4), noise_generator).to(batch.video.device)
    out = model(batch.video, batch.video_len, batch.word_ids, batch.char_ids, padding=padding, gumbel_noise=noise)
    loc = localization_loss(out.start_logits, out.end_logits, batch.s_labels, batch.e_labels, out.video_mask)
    match = matching_loss(out.match_logits, batch.match_labels, out.video_mask, model.matcher.label_emb)
    return loc + model.cfg.match_lambda * match


@dataclass(frozen=True)
class Schedule:
    """Everything that fixes the optimisation trajectory; saved with each checkpoint, kept on resume."""
    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    padding: str = "batch"
    patience: int = 10  # epochs without a better validation R@1 IoU=0.7 before stopping
    seed: int = 12345

    def __post_init__(self) -> None:
        check_padding(self.padding)
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise TrainError("epochs, batch size and patience must be at least 1")


@dataclass
class Progress:
    epoch: int = 0
    batch: int = 0  # the next batch of this epoch
    step: int = 0  # optimizer steps taken
    best: float = -1.0  # best validation R@1 IoU=0.7
    evals_since_best: int = 0
    evaluated_step: int = -1  # the step the last validation ran at


@dataclass
class TrainResult:
    best_path: Path | None
    last_path: Path
    steps: int
    stopped: str  # "epochs", "early stopping", "max steps", "time budget"
    best_metrics: dict[str, float] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)  # one per step of this run


def state_path(checkpoint: Path) -> Path:
    """The sidecar holding optimizer moments and RNG states next to a checkpoint."""
    return checkpoint.with_name(checkpoint.name.removesuffix(".safetensors") + ".train.pt")


class Trainer:
    """One training run over a dataset; `fresh` starts it, `resume` picks it up from `last`."""

    def __init__(self, model: SeqPAN, data: Dataset, schedule: Schedule, out: str | Path,
                 device: str | torch.device = "cpu"):
        self.model, self.data, self.schedule = model.to(device), data, schedule
        self.out, self.device = Path(out), torch.device(device)
        self.optimizer = make_optimizer(self.model, schedule.lr, schedule.weight_decay)
        self.noise = torch.Generator().manual_seed(schedule.seed + 1)
        self.progress = Progress()
        self.best_metrics: dict[str, float] = {}

    @classmethod
    def fresh(cls, cfg: SeqPANConfig, data: Dataset, schedule: Schedule, out: str | Path,
              device: str | torch.device = "cpu") -> Trainer:
        if (cfg.num_words, cfg.num_chars) != (len(data.word_dict), len(data.char_dict)):
            raise TrainError(f"config vocabulary sizes {cfg.num_words}/{cfg.num_chars} do not fit the data's "
                             f"{len(data.word_dict)}/{len(data.char_dict)}")
        torch.manual_seed(schedule.seed)  # dropout
        model = SeqPAN(cfg)
        init_weights(model, data.word_vectors, torch.Generator().manual_seed(schedule.seed))
        return cls(model, data, schedule, out, device)

    @classmethod
    def resume(cls, checkpoint: str | Path, data: Dataset, out: str | Path,
               device: str | torch.device = "cpu") -> Trainer:
        """Continue exactly where `checkpoint` (with its `.train.pt` sidecar) left off."""
        checkpoint = Path(checkpoint)
        ckpt = load_checkpoint(checkpoint, device)
        sidecar = state_path(checkpoint)
        if not sidecar.is_file():
            raise TrainError(f"{checkpoint} has no training state {sidecar.name} to resume from")
        try:
            state = torch.load(sidecar, map_location="cpu", weights_only=True)
            schedule = Schedule(**ckpt.extra["schedule"])
            progress = Progress(**ckpt.extra["progress"])
        except (KeyError, TypeError, RuntimeError, OSError) as err:
            raise CheckpointError(f"cannot resume from {checkpoint}: {err}") from None
        if state.get("step") != progress.step:
            raise TrainError(f"{checkpoint} (step {progress.step}) and {sidecar.name} (step {state.get('step')}) "
                             "come from different saves")
        if (ckpt.word_dict, ckpt.char_dict) != (data.word_dict, data.char_dict):
            raise TrainError(f"the data's vocabulary differs from the one {checkpoint} was trained with")
        trainer = cls(ckpt.model, data, schedule, out, device)
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.noise.set_state(state["noise_rng"])
        torch.set_rng_state(state["cpu_rng"])
        if trainer.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], trainer.device)
        trainer.progress, trainer.best_metrics = progress, ckpt.extra.get("best_metrics", {})
        return trainer

    def save(self, name: str, with_state: bool) -> Path:
        """Write `<out>/<name>.safetensors` (and, for resuming, its sidecar first)."""
        path = self.out / f"{name}.safetensors"
        if with_state:
            state = {"step": self.progress.step, "optimizer": self.optimizer.state_dict(),
                     "noise_rng": self.noise.get_state(), "cpu_rng": torch.get_rng_state()}
            if self.device.type == "cuda":
                state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
            write_atomically(state_path(path), lambda tmp: torch.save(state, tmp))
        extra = {"schedule": dataclasses.asdict(self.schedule), "progress": dataclasses.asdict(self.progress),
                 "best_metrics": self.best_metrics}
        return save_checkpoint(path, self.model, self.data.word_dict, self.data.char_dict, extra)

    def validate(self, log: Callable[[str], None]) -> bool:
        """Evaluate on the validation split, keep the best model; True when patience has run out."""
        p = self.progress
        metrics = evaluate_samples(self.model, self.data.val, self.data.features, device=self.device).metrics
        p.evaluated_step = p.step
        log(f"epoch {p.epoch + 1} step {p.step}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if metrics[SELECTION_METRIC] > p.best:
            p.best, p.evals_since_best, self.best_metrics = metrics[SELECTION_METRIC], 0, metrics
            self.save("best", with_state=False)
        else:
            p.evals_since_best += 1
        return p.evals_since_best >= self.schedule.patience * EVALS_PER_EPOCH

    def run(self, max_steps: int | None = None, seconds: float | None = None, show_progress: bool | None = None,
            log: Callable[[str], None] = print) -> TrainResult:
        """Train until the schedule ends, patience runs out, `max_steps` or the `seconds` budget.

        Validation runs twice per epoch (and once more at the end if the last step was not
        validated); `last` (with its sidecar) is saved at each validation and at the end.
        """
        if not self.data.val:
            raise TrainError("the validation split has no samples")
        s, p, train = self.schedule, self.progress, self.data.train
        deadline = None if seconds is None else time.monotonic() + seconds
        num_batches = math.ceil(len(train) / s.batch_size)
        eval_period = max(1, num_batches // EVALS_PER_EPOCH)
        losses: list[float] = []
        stopped = "epochs" if max_steps is None or p.step < max_steps else "max steps"
        self.model.train()
        while p.epoch < s.epochs and stopped == "epochs":
            self.optimizer.lr = s.lr * (1.0 - p.epoch / s.epochs)
            order = np.random.default_rng([s.seed, p.epoch]).permutation(len(train))
            bar = tqdm(range(p.batch, num_batches), initial=p.batch, total=num_batches, leave=False,
                       desc=f"epoch {p.epoch + 1}/{s.epochs}",
                       disable=None if show_progress is None else not show_progress)
            for index in bar:
                chunk = [train[i] for i in order[index * s.batch_size:(index + 1) * s.batch_size]]
                loss = self.step(collate(chunk, self.data.features, self.device))
                losses.append(loss)
                bar.set_postfix(loss=f"{loss:.3f}")
                p.batch, p.step = index + 1, p.step + 1
                if p.step % eval_period == 0:
                    if self.validate(log):
                        stopped = "early stopping"
                    self.save("last", with_state=True)
                if stopped == "epochs" and max_steps is not None and p.step >= max_steps:
                    stopped = "max steps"
                if stopped == "epochs" and deadline is not None and time.monotonic() >= deadline:
                    stopped = "time budget"
                if stopped != "epochs":
                    break
            bar.close()
            if p.batch == num_batches:
                p.epoch, p.batch = p.epoch + 1, 0
        if p.evaluated_step != p.step:
            self.validate(log)
        last = self.save("last", with_state=True)
        best = self.out / "best.safetensors"
        return TrainResult(best if best.is_file() else None, last, p.step, stopped, self.best_metrics, losses)

    def step(self, batch: Batch) -> float:
        """One optimizer step on a batch; returns the loss."""
        loss = training_loss(self.model, batch, self.schedule.padding, self.noise)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainError(f"the loss became {value} at step {self.progress.step + 1}")
        self.optimizer.zero_grad()
        loss.backward()
        clip_by_global_norm(self.model.parameters(), self.schedule.clip_norm)
        self.optimizer.step()
        return value
