"""The reference against the authors' original TF model: outputs, intermediates, losses."""
from __future__ import annotations

import pytest
import torch

from engine.io.golden import golden_model, load_golden
from reference.losses import localization_loss, matching_loss
from reference.ops import relative_error
from tests.helpers import assert_logits_match_golden

INTERMEDIATE_RTOL = 2e-5  # each sample's part of an intermediate, float64 against TF's fp32 (measured <= 4.8e-6)
LOSS_RTOL = 5e-6  # measured <= 1.1e-6 on the 4 goldens


def run_golden(path, padding: str, dtype: torch.dtype = torch.float64):
    golden = load_golden(path)
    model = golden_model(golden).to(dtype)
    a = golden.arrays
    t = {k: torch.from_numpy(a[f"in/{k}"]) for k in ("video", "video_len", "word_ids", "char_ids", "gumbel_noise")}
    trace: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        out = model(t["video"].to(dtype), t["video_len"].long(), t["word_ids"].long(), t["char_ids"].long(),
                    padding=padding, gumbel_noise=t["gumbel_noise"].to(dtype), trace=trace)
    return golden, model, out, trace


def valid_slices(golden, name: str) -> list[tuple[slice, ...]]:
    """Per-sample valid region of a mid/* tensor (video rows @0, query rows @1; raw CQA scores are 2-D)."""
    vl = golden.arrays["in/video_len"]
    ql = (golden.arrays["in/word_ids"] != 0).sum(1)
    first = ql if name.endswith("@1") or name.startswith("cq_attention:v2q") else vl
    second = {"cq_attention:q2v_attn#1@0": ql, "cq_attention:v2q_attn#1@0": vl}.get(name)
    return [(slice(0, first[b]),) + (() if second is None else (slice(0, second[b]),)) for b in range(len(vl))]


def valid_rows(logits, lengths) -> list:
    """Each sample's logits over its valid positions."""
    return [logits[b, :n] for b, n in enumerate(lengths)]


def test_batch_padding_reproduces_original_outputs(golden_path):
    golden, _, out, _ = run_golden(golden_path, "batch", torch.float32)
    a = golden.arrays
    lengths = a["in/video_len"]
    assert out.start_index.tolist() == a["out/start_index"].tolist()
    assert out.end_index.tolist() == a["out/end_index"].tolist()
    for key, logits in (("predictor#0@0", out.start_logits), ("predictor#1@0", out.end_logits)):
        assert_logits_match_golden(valid_rows(logits, lengths), valid_rows(a[f"mid/conditioned_predictor:{key}"], lengths),
                                   key)


def test_every_intermediate_matches_original(golden_path):
    golden, _, _, trace = run_golden(golden_path, "batch")
    recorded = {k[len("mid/"):] for k in golden.arrays if k.startswith("mid/")}
    assert recorded == set(trace), "the trace names every intermediate the golden records"
    for name, value in trace.items():
        ref = golden.arrays[f"mid/{name}"]
        for b, s in enumerate(valid_slices(golden, name)):
            err = relative_error(value[b][s].numpy(), ref[b][s])
            assert err <= INTERMEDIATE_RTOL, f"{name}, sample {b}: relative error {err:.2e}"


def test_losses_match_original(golden_path):
    golden, model, out, _ = run_golden(golden_path, "batch")
    a = golden.arrays
    y1, y2 = torch.from_numpy(a["in/y1"]).double(), torch.from_numpy(a["in/y2"]).double()
    loc = localization_loss(out.start_logits, out.end_logits, y1, y2, out.video_mask)
    match = matching_loss(out.match_logits, torch.from_numpy(a["in/match_labels"]), out.video_mask,
                          model.matcher.label_emb.detach())
    assert float(loc) == pytest.approx(float(a["out/loc_loss"]), rel=LOSS_RTOL)
    assert float(match) == pytest.approx(float(a["out/match_loss"]), rel=LOSS_RTOL)
    total = float(loc) + model.cfg.match_lambda * float(match)
    assert total == pytest.approx(float(a["out/loss"]), rel=LOSS_RTOL)


def test_isolated_padding_reproduces_samples_run_alone(golden_path):
    golden, _, out, _ = run_golden(golden_path, "isolated", torch.float32)
    a = golden.arrays
    lengths = a["in/video_len"]
    samples = range(len(lengths))
    assert out.start_index.tolist() == [int(a[f"alone/{b}/start_index"][0]) for b in samples]
    assert out.end_index.tolist() == [int(a[f"alone/{b}/end_index"][0]) for b in samples]
    for key, logits in (("start_logits", out.start_logits), ("end_logits", out.end_logits)):
        assert_logits_match_golden(valid_rows(logits, lengths), [a[f"alone/{b}/{key}"][0] for b in samples], key)


def test_batch_and_isolated_differ_where_the_original_does():
    """The compact golden batches samples of different lengths, so padding changes some logits:
    the two modes must not be the same computation."""
    from tests.conftest import COMPACT_GOLDEN

    _, _, batch, _ = run_golden(COMPACT_GOLDEN, "batch")
    _, _, iso, _ = run_golden(COMPACT_GOLDEN, "isolated")
    assert not torch.allclose(batch.start_logits, iso.start_logits)
