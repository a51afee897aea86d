"""Convert the authors' TF weights (golden `.npz` or a TF checkpoint) to a native checkpoint."""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np

from reference.errors import SeqPANError
from reference.tf_names import WeightsError, model_from_tf_vars

from .checkpoint import save_checkpoint
from .golden import load_golden

# Optimizer state and bookkeeping that TF checkpoints carry beside the model's variables.
NON_MODEL_VARIABLE = re.compile(r"(adam_[mv]$|/Adam(_\d+)?$|^global_step$|beta[12]_power)")


class ConvertError(SeqPANError, ValueError):
    """A TF source or vocabulary that cannot be converted."""


def read_tf_checkpoint(directory: Path) -> dict[str, np.ndarray]:
    """Model variables of a TF checkpoint directory (needs `tensorflow`)."""
    try:
        import tensorflow as tf  # noqa: PLC0415 - optional, heavy dependency
    except ImportError:
        raise ConvertError("reading a TF checkpoint directory needs tensorflow: pip install tensorflow "
                           "(or convert from a golden-format .npz with var/* arrays)") from None
    prefix = tf.train.latest_checkpoint(str(directory))
    if prefix is None:
        raise ConvertError(f"no TF checkpoint found in {directory}")
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if not NON_MODEL_VARIABLE.search(name)}


def read_vocab(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    """`word_dict` and `char_dict` from the original's processed-dataset pickle."""
    if not path.is_file():
        raise ConvertError(f"vocabulary file not found: {path}")
    try:
        with path.open("rb") as f:
            data = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
        raise ConvertError(f"cannot read vocabulary pickle {path}: {err}") from None
    if not isinstance(data, dict) or "word_dict" not in data or "char_dict" not in data:
        raise ConvertError(f"vocabulary pickle {path} must be a dict with 'word_dict' and 'char_dict'")
    return dict(data["word_dict"]), dict(data["char_dict"])


def convert_tf(src: str | Path, vocab: str | Path, out: str | Path, num_heads: int = 8,
               tau: float = 0.3) -> Path:
    """Read TF weights from `src`, check them against the vocabularies, write a native checkpoint."""
    src = Path(src)
    overrides = {"num_heads": num_heads, "tau": tau}
    if src.is_dir():
        tf_vars = read_tf_checkpoint(src)
    elif src.suffix == ".npz":
        golden = load_golden(src)
        tf_vars = golden.tf_vars
        overrides.update({k: golden.meta[k] for k in ("num_heads", "tau") if k in golden.meta})
    else:
        raise ConvertError(f"{src} is neither a TF checkpoint directory nor a golden-format .npz")
    word_dict, char_dict = read_vocab(Path(vocab))
    model = model_from_tf_vars(tf_vars, **overrides)
    if len(word_dict) != model.cfg.num_words or len(char_dict) != model.cfg.num_chars:
        raise WeightsError(f"vocabularies ({len(word_dict)} words, {len(char_dict)} chars) do not fit the "
                           f"weights ({model.cfg.num_words} words, {model.cfg.num_chars} chars)")
    return save_checkpoint(out, model, word_dict, char_dict, extra={"source": src.name})
