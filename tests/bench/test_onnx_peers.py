"""bench/onnx_peers.py: the whole model exported to ONNX answers like the reference on onnxruntime and
OpenVINO, at batch sizes and lengths other than the traced ones (dynamic shapes)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.onnx_peers import PEERS, peer_runner
from reference.testing import random_model
from tests.helpers import random_batch, small_config

pytest.importorskip("onnxscript", reason="the export needs onnxscript (pip install -e '.[test]')")
CFG = small_config(max_pos_len=32)
MODEL = random_model(CFG, seed=7)


@pytest.mark.slow  # exports the model (about 20 s on an idle 2-core machine)
@pytest.mark.parametrize("peer", PEERS)
def test_peer_answers_like_the_reference(peer):
    pytest.importorskip(peer.removesuffix("-dynamic"))
    run = peer_runner(peer, MODEL, "fp32", threads=1)
    for seed, (video_lens, query_lens) in enumerate([([1], [1]), ([32, 9, 20], [5, 2, 11])]):
        batch = random_batch(CFG, video_lens, query_lens, seed=seed, dtype=torch.float32)
        with torch.no_grad():
            ref = MODEL(**batch, padding="isolated")
        out = run(batch["video"], batch["video_len"], batch["word_ids"], batch["char_ids"])
        start, end, score = (np.asarray(v) for v in (out.values() if hasattr(out, "values") else out))
        assert start.tolist() == ref.start_index.tolist() and end.tolist() == ref.end_index.tolist()
        np.testing.assert_allclose(score, ref.score.numpy(), rtol=1e-4)


def test_onnxruntime_refuses_bf16():
    with pytest.raises(ValueError, match="fp32 only"):
        peer_runner("onnxruntime-dynamic", MODEL, "bf16", threads=1)
