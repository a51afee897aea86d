"""Hyper-parameters of SeqPAN and the original code's per-dataset presets."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class SeqPANConfig:
    """Everything that fixes the shapes and the numerics of a SeqPAN model."""

    num_words: int  # vocabulary size including PAD (0) and UNK (1)
    num_chars: int  # character vocabulary size including PAD (0)
    max_pos_len: int = 64  # clips per video after down-sampling; also the longest query
    char_dim: int = 50
    word_dim: int = 300
    visual_dim: int = 1024
    dim: int = 128
    num_heads: int = 8
    attn_layer: int = 2
    tau: float = 0.3
    drop_rate: float = 0.2
    match_lambda: float = 1.0
    char_kernels: tuple[int, ...] = (1, 2, 3, 4)
    char_filters: tuple[int, ...] = (10, 20, 30, 40)
    conv_kernel: int = 7
    conv_layers: int = 4

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not a multiple of num_heads {self.num_heads}")
        if len(self.char_kernels) != len(self.char_filters):
            raise ValueError("char_kernels and char_filters differ in length")

    @property
    def head_size(self) -> int:
        return self.dim // self.num_heads

    @property
    def char_out_dim(self) -> int:
        return sum(self.char_filters)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SeqPANConfig":
        raw = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        for key in ("char_kernels", "char_filters"):
            if key in raw:
                raw[key] = tuple(raw[key])
        return cls(**raw)


# The original's command-line defaults per dataset (max_pos_len, char_dim).
PRESETS: dict[str, dict[str, int]] = {
    "charades": {"max_pos_len": 64, "char_dim": 50},
    "activitynet": {"max_pos_len": 100, "char_dim": 100},
    "tacos": {"max_pos_len": 256, "char_dim": 50},
}


def preset(dataset: str, num_words: int, num_chars: int, **overrides) -> SeqPANConfig:
    """Config with the original's hyper-parameters for `dataset` (charades, activitynet, tacos)."""
    if dataset not in PRESETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(PRESETS)}")
    return SeqPANConfig(num_words=num_words, num_chars=num_chars, **{**PRESETS[dataset], **overrides})
