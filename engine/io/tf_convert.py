"""Convert the authors' TF weights (golden `.npz` or a TF checkpoint) to a native checkpoint."""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np

from reference.errors import SeqPANError
from reference.tf_names import WeightsError, model_from_tf_vars

from .checkpoint import check_vocab, save_checkpoint
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


class _Opaque:
    """What a vocabulary pickle's objects other than plain containers, text and numbers become (the
    original's word vectors, numpy scalars, ...): built from nothing, holding nothing, running nothing."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass

    def append(self, item: object) -> None:
        pass

    def extend(self, items: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, tuples, sets, text and numbers; every class or function the pickle
    names is replaced by `_Opaque` without being imported, so loading runs no code of the file's."""

    def find_class(self, module: str, name: str) -> type:
        return _Opaque

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("persistent ids are not supported")


def read_vocab(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    """`word_dict` and `char_dict` from the original's processed-dataset pickle, read with an
    unpickler that imports and calls nothing (the rest of the pickle is ignored)."""
    if not path.is_file():
        raise ConvertError(f"vocabulary file not found: {path}")
    try:
        with path.open("rb") as f:
            data = _PlainUnpickler(f).load()
    except OSError as err:
        raise ConvertError(f"cannot read vocabulary pickle {path}: {err.strerror}") from None
    except Exception as err:  # noqa: BLE001 - whatever a malformed pickle raises, it is a bad file
        raise ConvertError(f"cannot read vocabulary pickle {path}: {type(err).__name__}: {err}") from None
    if not isinstance(data, dict) or "word_dict" not in data or "char_dict" not in data:
        raise ConvertError(f"vocabulary pickle {path} must be a dict with 'word_dict' and 'char_dict'")
    return tuple(check_vocab_dict(data[name], path, name) for name in ("word_dict", "char_dict"))


def check_vocab_dict(vocab: object, path: Path, name: str) -> dict[str, int]:
    """A vocabulary from a pickle: text keys, non-negative integer ids."""
    if not isinstance(vocab, dict) or not all(type(k) is str and type(v) is int and v >= 0 for k, v in vocab.items()):
        raise ConvertError(f"vocabulary pickle {path}: {name} must map words to non-negative integer ids")
    return dict(vocab)


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
    check_vocab(word_dict, model.cfg.num_words, "word_dict")
    check_vocab(char_dict, model.cfg.num_chars, "char_dict")
    return save_checkpoint(out, model, word_dict, char_dict, extra={"source": src.name})
