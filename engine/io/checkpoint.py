"""Native checkpoints: one safetensors file with the config and vocabularies in its metadata."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from reference.config import SeqPANConfig
from reference.errors import SeqPANError
from reference.model import SeqPAN

from .atomic import write_atomically

FORMAT = "seqpan-checkpoint-v1"


class CheckpointError(SeqPANError, ValueError):
    """A checkpoint that is missing, corrupt, or does not fit the model."""


@dataclass
class Checkpoint:
    """A model with the vocabularies that produced its word and char ids."""
    model: SeqPAN
    word_dict: dict[str, int]
    char_dict: dict[str, int]
    extra: dict


def save_checkpoint(path: str | Path, model: SeqPAN, word_dict: dict[str, int], char_dict: dict[str, int],
                    extra: dict | None = None) -> Path:
    """Write model weights (fp32), config and vocabularies to one `.safetensors` file."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "config": model.cfg.to_json(), "word_dict": json.dumps(word_dict),
                "char_dict": json.dumps(char_dict), "extra": json.dumps(extra or {})}
    write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def read_metadata(path: Path) -> dict[str, str]:
    """The safetensors header metadata, without loading tensors."""
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a native checkpoint; raises CheckpointError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        meta = read_metadata(path)
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a safetensors file: {err}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a seqpan checkpoint (format {meta.get('format')!r})")
    try:
        cfg = SeqPANConfig.from_json(meta["config"])
        word_dict, char_dict = json.loads(meta["word_dict"]), json.loads(meta["char_dict"])
        extra = json.loads(meta.get("extra", "{}"))
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path} has malformed metadata: {err}") from None
    model = SeqPAN(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit the model: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    for name, value in tensors.items():
        if value.shape != expected[name].shape:
            raise CheckpointError(f"checkpoint {path}: {name} has shape {tuple(value.shape)}, "
                                  f"expected {tuple(expected[name].shape)}")
    model.load_state_dict(tensors)
    return Checkpoint(model.to(device).eval(), word_dict, char_dict, extra)


def weights_hash(model: SeqPAN) -> str:
    """A stable SHA-256 over the config and every weight, for caches keyed by weights."""
    h = hashlib.sha256(model.cfg.to_json().encode())
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()
