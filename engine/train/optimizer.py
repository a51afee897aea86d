"""The original's optimizer: Adam without bias correction and with decoupled weight decay, and
TF's gradient clipping by global norm."""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from reference.model import SeqPAN
from reference.tf_names import tf_name_map

from .errors import TrainError

NO_DECAY = re.compile(r"LayerNorm|layer_norm|bias")  # the original's exclude_from_weight_decay, on TF names


class AdamWeightDecay:
    """The original's AdamWeightDecayOptimizer: m, v updated as Adam's but never bias-corrected,
    update = m / (sqrt(v) + eps) (+ weight_decay * param where decayed), param -= lr * update."""

    def __init__(self, params: Sequence[nn.Parameter], decay: Sequence[bool], lr: float = 1e-4,
                 weight_decay: float = 0.01, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6):
        self.params, self.decay = list(params), list(decay)
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self) -> None:
        beta_1, beta_2 = self.betas
        for param, decay, m, v in zip(self.params, self.decay, self.m, self.v):
            if param.grad is None:
                continue
            grad = param.grad
            m.mul_(beta_1).add_(grad, alpha=1.0 - beta_1)
            v.mul_(beta_2).addcmul_(grad, grad, value=1.0 - beta_2)
            update = m / (v.sqrt() + self.eps)
            if decay and self.weight_decay:
                update.add_(param, alpha=self.weight_decay)
            param.sub_(update, alpha=self.lr)

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    def state_dict(self) -> dict[str, list[torch.Tensor]]:
        return {"m": [t.cpu() for t in self.m], "v": [t.cpu() for t in self.v]}

    def load_state_dict(self, state: dict[str, list[torch.Tensor]]) -> None:
        shapes = [p.shape for p in self.params]
        if [t.shape for t in state["m"]] != shapes or [t.shape for t in state["v"]] != shapes:
            raise TrainError("the optimizer state does not fit the model")
        for mine, saved in zip(self.m + self.v, state["m"] + state["v"]):
            mine.copy_(saved)


def make_optimizer(model: SeqPAN, lr: float, weight_decay: float) -> AdamWeightDecay:
    """Weight decay on every parameter but those the original's rule excludes by TF variable name."""
    tf_names = {pt: tf for tf, pt, _ in tf_name_map(model.cfg)}
    names, params = zip(*model.named_parameters())
    return AdamWeightDecay(params, [not NO_DECAY.search(tf_names[n]) for n in names], lr, weight_decay)


def clip_by_global_norm(params: Iterable[nn.Parameter], clip_norm: float) -> float:
    """TF's clip_by_global_norm: scale every gradient by clip_norm / max(global_norm, clip_norm)."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = clip_norm / torch.maximum(norm, torch.tensor(clip_norm, device=norm.device))
    for g in grads:
        g.mul_(scale)
    return float(norm)
