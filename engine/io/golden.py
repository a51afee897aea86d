"""Reading golden-vector files (`.npz` produced by running the authors' original model)."""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reference.errors import SeqPANError

INPUT_KEYS = ("in/video", "in/video_len", "in/word_ids", "in/char_ids")


class GoldenError(SeqPANError, ValueError):
    """A golden file that is missing, unreadable or malformed."""


@dataclass
class Golden:
    """The parts of a golden file: meta, inputs, TF variables and recorded outputs."""
    path: Path
    meta: dict
    arrays: dict[str, np.ndarray]

    @property
    def tf_vars(self) -> dict[str, np.ndarray]:
        return {k[len("var/"):]: v for k, v in self.arrays.items() if k.startswith("var/")}

    @property
    def batch_size(self) -> int:
        return int(self.arrays["in/video_len"].shape[0])


def load_golden(path: str | Path) -> Golden:
    """Load and validate a golden `.npz`; raise GoldenError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise GoldenError(f"golden file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise GoldenError(f"cannot read golden file {path}: {err}") from None
    missing = [k for k in (*INPUT_KEYS, "meta") if k not in arrays]
    if missing:
        raise GoldenError(f"golden file {path} lacks {', '.join(missing)}")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as err:
        raise GoldenError(f"golden file {path} has malformed meta: {err}") from None
    if not any(k.startswith("var/") for k in arrays):
        raise GoldenError(f"golden file {path} holds no weights (var/*)")
    video, lens = arrays["in/video"], arrays["in/video_len"]
    words, chars = arrays["in/word_ids"], arrays["in/char_ids"]
    if video.ndim != 3 or lens.ndim != 1 or words.ndim != 2 or chars.ndim != 3:
        raise GoldenError(f"golden file {path}: inputs have wrong ranks "
                          f"(video {video.shape}, video_len {lens.shape}, word_ids {words.shape}, "
                          f"char_ids {chars.shape})")
    b = video.shape[0]
    if not (lens.shape[0] == words.shape[0] == chars.shape[0] == b) or chars.shape[1] != words.shape[1]:
        raise GoldenError(f"golden file {path}: inputs disagree in shape (video {video.shape}, "
                          f"video_len {lens.shape}, word_ids {words.shape}, char_ids {chars.shape})")
    noise = arrays.get("in/gumbel_noise")
    if noise is not None and noise.shape != (b, video.shape[1], 4):
        raise GoldenError(f"golden file {path}: gumbel_noise has shape {noise.shape}, "
                          f"expected {(b, video.shape[1], 4)}")
    return Golden(path, meta, arrays)


def golden_model(golden: Golden):
    """The reference SeqPAN holding a golden file's weights, with its meta's num_heads and tau."""
    from reference.tf_names import model_from_tf_vars

    overrides = {k: golden.meta[k] for k in ("num_heads", "tau") if k in golden.meta}
    return model_from_tf_vars(golden.tf_vars, **overrides)
