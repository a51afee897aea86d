"""A checkpoint and a features root (with a folder and symlinks outside it) for the serving tests."""
from __future__ import annotations

import os

import numpy as np
import pytest

from engine.io.checkpoint import save_checkpoint
from tests.engine.test_engine import CFG, CHAR_DICT, MODEL, WORD_DICT


@pytest.fixture(scope="package")
def serve_files(tmp_path_factory):
    """(checkpoint, features root, a folder outside the root); the root holds a.npy (20 clips),
    b.npy (70), sub/c.npy (1), and symlinks that lead outside it: link.npy and linkdir/."""
    base = tmp_path_factory.mktemp("serve")
    root, outside = base / "root", base / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    gen = np.random.default_rng(0)
    for path, clips in ((root / "a.npy", 20), (root / "b.npy", 70), (root / "sub" / "c.npy", 1),
                        (outside / "secret.npy", 5)):
        np.save(path, gen.standard_normal((clips, CFG.visual_dim)).astype(np.float32))
    os.symlink(outside / "secret.npy", root / "link.npy")
    os.symlink(outside, root / "linkdir")
    ckpt = save_checkpoint(base / "model.safetensors", MODEL, WORD_DICT, CHAR_DICT)
    return ckpt, root, outside


def assert_same_answers(got: list[dict], expected: list[dict]) -> None:
    """Served results equal the engine's own: same ids, errors, clip indices and seconds; scores equal
    to float32 rounding (a process with another thread count sums in another order)."""
    assert [r["id"] for r in got] == [r["id"] for r in expected]
    for g, e in zip(got, expected):
        assert set(g) == set(e), (g, e)
        if "error" in e:
            assert g["error"] == e["error"]
            continue
        assert (g["start_index"], g["end_index"], g["start"], g["end"]) == \
               (e["start_index"], e["end_index"], e["start"], e["end"]), (g, e)
        assert g["score"] == pytest.approx(e["score"], rel=1e-5)
