"""Run a backend on a golden file's inputs and compare with the original model's outputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from reference.ops import relative_error

from .backends import build_backend
from .io.golden import Golden, golden_model, load_golden

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def relative_error_of_samples(values: list[np.ndarray], expected: list[np.ndarray]) -> float:
    """The relative error over the concatenation of per-sample valid positions."""
    return relative_error(np.concatenate(values), np.concatenate(expected))


def expected_outputs(golden: Golden, padding: str) -> dict | None:
    """The original's indices and logits for `padding` (out/* or alone/*), when the file has them."""
    a, lens = golden.arrays, golden.arrays["in/video_len"]
    b = golden.batch_size
    if padding == "batch":
        keys = ("out/start_index", "out/end_index", "mid/conditioned_predictor:predictor#0@0",
                "mid/conditioned_predictor:predictor#1@0")
        if not all(k in a for k in keys):
            return None
        return {"start_index": a[keys[0]].tolist(), "end_index": a[keys[1]].tolist(),
                "start_logits": [a[keys[2]][i, : lens[i]] for i in range(b)],
                "end_logits": [a[keys[3]][i, : lens[i]] for i in range(b)]}
    if not all(f"alone/{i}/start_logits" in a for i in range(b)):
        return None
    return {"start_index": [int(a[f"alone/{i}/start_index"][0]) for i in range(b)],
            "end_index": [int(a[f"alone/{i}/end_index"][0]) for i in range(b)],
            "start_logits": [a[f"alone/{i}/start_logits"][0] for i in range(b)],
            "end_logits": [a[f"alone/{i}/end_logits"][0] for i in range(b)]}


def run_parity(golden_path: str | Path, backend: str = "reference", padding: str = "batch",
               dtype: str = "float32", device: str = "cpu") -> dict:
    """Outputs of `backend` on the golden's inputs (with its Gumbel noise), and their agreement
    with the original's outputs when the file records them."""
    golden = load_golden(golden_path)
    torch_dtype = DTYPES[dtype]
    model = golden_model(golden).to(device=device, dtype=torch_dtype)
    runner = build_backend(backend, model)
    a = golden.arrays

    def tensor(key: str, dt: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a[key])).to(device=device, dtype=dt)

    noise = tensor("in/gumbel_noise", torch_dtype) if "in/gumbel_noise" in a else None
    with torch.no_grad():
        out = runner(tensor("in/video", torch_dtype), tensor("in/video_len", torch.long),
                     tensor("in/word_ids", torch.long), tensor("in/char_ids", torch.long),
                     padding=padding, gumbel_noise=noise)
    lens = a["in/video_len"]
    result = {
        "golden": str(golden_path), "backend": backend, "padding": padding, "dtype": dtype,
        "start_index": out.start_index.tolist(), "end_index": out.end_index.tolist(),
        "start_logits": [out.start_logits[i, :n].double().cpu().numpy() for i, n in enumerate(lens)],
        "end_logits": [out.end_logits[i, :n].double().cpu().numpy() for i, n in enumerate(lens)],
    }
    expected = expected_outputs(golden, padding)
    if expected is not None:
        result["indices_equal"] = (result["start_index"] == expected["start_index"]
                                   and result["end_index"] == expected["end_index"])
        result["logits_rel_err"] = max(relative_error_of_samples(result["start_logits"], expected["start_logits"]),
                                       relative_error_of_samples(result["end_logits"], expected["end_logits"]))
        result["expected_start_index"] = expected["start_index"]
        result["expected_end_index"] = expected["end_index"]
    for key in ("start_logits", "end_logits"):
        result[key] = [row.tolist() for row in result[key]]
    return result
