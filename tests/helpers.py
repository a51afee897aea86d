"""Test helpers: random models and batches, per-sample views, error measures."""
from __future__ import annotations

import torch

from reference.config import SeqPANConfig
from reference.ops import relative_error


def small_config(**overrides) -> SeqPANConfig:
    """A small SeqPAN (dim 32, 4 heads) that runs fast on CPU; every shape rule of the real one."""
    base = dict(num_words=40, num_chars=30, max_pos_len=48, char_dim=8, word_dim=12, visual_dim=24, dim=32,
                num_heads=4, attn_layer=2)
    return SeqPANConfig(**{**base, **overrides})


def random_batch(cfg: SeqPANConfig, video_lens: list[int], query_lens: list[int], seed: int = 0,
                 dtype: torch.dtype = torch.float64, max_word_len: int = 9) -> dict[str, torch.Tensor]:
    """A padded batch: zero-padded video features, word ids 2.., left-packed char ids."""
    g = torch.Generator().manual_seed(seed)
    b, n, m = len(video_lens), max(video_lens), max(query_lens)
    video = torch.zeros(b, n, cfg.visual_dim, dtype=dtype)
    words = torch.zeros(b, m, dtype=torch.long)
    word_lens = torch.randint(1, max_word_len + 1, (b, m), generator=g)
    chars = torch.zeros(b, m, max(4, int(word_lens.max())), dtype=torch.long)
    for i, (vl, ql) in enumerate(zip(video_lens, query_lens)):
        video[i, :vl] = torch.randn(vl, cfg.visual_dim, generator=g, dtype=dtype)
        words[i, :ql] = torch.randint(1, cfg.num_words, (ql,), generator=g)
        for j in range(ql):
            chars[i, j, : word_lens[i, j]] = torch.randint(1, cfg.num_chars, (int(word_lens[i, j]),), generator=g)
    return {"video": video, "video_len": torch.tensor(video_lens), "word_ids": words, "char_ids": chars}


def sample_alone(batch: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """Sample i as the original would batch it alone: video cut to its length, query to its words,
    chars to max(4, its longest word)."""
    vl = int(batch["video_len"][i])
    ql = int((batch["word_ids"][i] != 0).sum())
    chars = batch["char_ids"][i : i + 1, :ql]
    width = max(4, int((chars != 0).sum(-1).max()))
    return {"video": batch["video"][i : i + 1, :vl], "video_len": batch["video_len"][i : i + 1],
            "word_ids": batch["word_ids"][i : i + 1, :ql], "char_ids": chars[:, :, :width]}


def sample_errors(out: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None = None) -> list[float]:
    """The relative error of each sample (dim 0) on its own, over its positions that `mask`
    ([B, N]) sets, or all of them."""
    return [relative_error(out[i], ref[i], None if mask is None else mask[i]) for i in range(out.shape[0])]


def assert_samples_close(out: torch.Tensor, ref: torch.Tensor, tolerance: float, mask: torch.Tensor | None = None,
                         what: str = "output") -> None:
    """Every sample within `tolerance` of the reference, over its valid positions (`mask`) and over
    all positions, so that one bad sample (a short one among long ones) cannot hide in the batch."""
    for where, m in (("valid positions", mask), ("all positions", None)):
        errors = sample_errors(out, ref, m)
        worst = max(range(len(errors)), key=errors.__getitem__)
        assert errors[worst] <= tolerance, (f"{what}, {where}: sample {worst} of {len(errors)} has relative error "
                                            f"{errors[worst]:.3g} > {tolerance:g}")


class CliResult:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_cli(*args: str) -> CliResult:
    """Run `seqpan ARGS` in this process (the same `main` the console script calls)."""
    import contextlib
    import io

    from engine.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 1
    return CliResult(code, out.getvalue(), err.getvalue())


SCORE_RTOL = 1e-5  # the README's bound on a score across batch compositions (BLAS rounding by matrix size)


def assert_same_answer(got, expected) -> None:
    """Two GroundingResults of one request in different batches: the same error, or the same span
    (indices, hence times, exactly) and scores within SCORE_RTOL."""
    import pytest

    assert got.error == expected.error and got.id == expected.id
    if expected.error is None:
        assert (got.start_index, got.end_index, got.start, got.end) == \
            (expected.start_index, expected.end_index, expected.start, expected.end)
        assert got.score == pytest.approx(expected.score, rel=SCORE_RTOL)


def fuzz_settings(examples: int):
    """Hypothesis settings for a fuzz test: `examples` examples (times SEQPAN_FUZZ_SCALE, for longer
    local runs), no deadline (the machine is shared), derandomized in CI so a run is reproducible
    (SEQPAN_FUZZ_SCALE set: random, to explore)."""
    import os

    from hypothesis import HealthCheck, settings

    scale = int(os.environ.get("SEQPAN_FUZZ_SCALE", "0"))
    return settings(max_examples=examples * max(scale, 1), deadline=None, derandomize=scale == 0,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much], database=None)


def scratch_folder(prefix: str):
    """A temporary folder for a test module's files, made now (strategies may name its files at
    import) and removed when the process exits."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


# The fp32 reference against the goldens (the authors' TF model in fp32), measured on the 4 goldens in
# both paddings: ≤ 4.1e-6 over all samples' valid logits together, ≤ 5.6e-6 for one sample but
# 1.8e-5 for charades_b4's one-clip sample (its single logit). The bounds are a few times those.
GOLDEN_RTOL = 2e-5  # all samples' valid logits together
GOLDEN_SAMPLE_RTOL = 5e-5  # each sample's valid logits alone


def assert_logits_match_golden(got: list, expected: list, what: str = "logits") -> None:
    """Per-sample logits (each sample's valid positions) against the golden's: every sample within
    GOLDEN_SAMPLE_RTOL, all together within GOLDEN_RTOL."""
    import numpy as np

    from reference.ops import relative_error

    got = [np.asarray(g, dtype=np.float64).ravel() for g in got]
    expected = [np.asarray(e, dtype=np.float64).ravel() for e in expected]
    assert [g.shape for g in got] == [e.shape for e in expected], what
    for b, (g, e) in enumerate(zip(got, expected)):
        err = relative_error(g, e)
        assert err <= GOLDEN_SAMPLE_RTOL, f"{what}, sample {b}: relative error {err:.2e}"
    err = relative_error(np.concatenate(got), np.concatenate(expected))
    assert err <= GOLDEN_RTOL, f"{what}: relative error {err:.2e} over all samples"


class GroundOnlyEngine:
    """A stand-in engine for the micro-batcher that defines only `ground(requests)`: its preparation
    hands the requests through as they are, and its run grounds them."""

    def prepare_all(self, requests):
        return list(requests)

    def run_prepared(self, items):
        return self.ground(items)


class Text(str):
    """A str subclass, as a caller's own string type."""
