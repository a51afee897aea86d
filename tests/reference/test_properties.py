"""Properties of the reference that the goldens alone do not pin: batch invariance, determinism,
span decoding, input validation."""
from __future__ import annotations

import random

import pytest
import torch

from reference.localizer import decode_span
from reference.ops import mask_logits, relative_error
from reference.testing import random_model
from tests.helpers import random_batch, sample_alone, small_config

CFG = small_config()
MODEL = random_model(CFG, seed=1, dtype=torch.float64)


def run(model, batch, **kw):
    with torch.no_grad():
        return model(batch["video"], batch["video_len"], batch["word_ids"], batch["char_ids"], **kw)


@pytest.mark.parametrize("seed", range(6))
def test_isolated_equals_each_sample_alone(seed):
    rng = random.Random(seed)
    b = rng.randint(1, 6)
    video_lens = [rng.choice([1, 2, CFG.max_pos_len, rng.randint(1, CFG.max_pos_len)]) for _ in range(b)]
    query_lens = [rng.choice([1, rng.randint(1, 12)]) for _ in range(b)]
    batch = random_batch(CFG, video_lens, query_lens, seed=seed)
    out = run(MODEL, batch, padding="isolated")
    for i, n in enumerate(video_lens):
        alone = run(MODEL, sample_alone(batch, i), padding="batch")
        assert out.start_index[i] == alone.start_index[0] and out.end_index[i] == alone.end_index[0]
        assert relative_error(out.start_logits[i, :n], alone.start_logits[0]) < 1e-12
        assert relative_error(out.end_logits[i, :n], alone.end_logits[0]) < 1e-12


def test_batch_padding_depends_on_batch_mates():
    batch = random_batch(CFG, [5, 30], [3, 9], seed=3)
    together = run(MODEL, batch, padding="batch")
    alone = run(MODEL, sample_alone(batch, 0), padding="batch")
    assert relative_error(together.start_logits[0, :5], alone.start_logits[0]) > 1e-6


def test_deterministic_without_noise_and_noise_changes_matching():
    batch = random_batch(CFG, [7, 12], [4, 2], seed=4)
    a, b = run(MODEL, batch), run(MODEL, batch)
    assert torch.equal(a.start_logits, b.start_logits) and torch.equal(a.match_logits, b.match_logits)
    noise = torch.randn(2, 12, 4, dtype=torch.float64)
    c = run(MODEL, batch, gumbel_noise=noise)
    assert not torch.equal(a.match_logits, c.match_logits)
    zero = run(MODEL, batch, gumbel_noise=torch.zeros(2, 12, 4, dtype=torch.float64))
    assert torch.equal(a.start_logits, zero.start_logits)


def brute_force_span(start_logits, end_logits, mask):
    """The original's N×N formulation: upper-triangular outer product, two marginal argmaxes."""
    ps = torch.softmax(mask_logits(start_logits, mask), 1)
    pe = torch.softmax(mask_logits(end_logits, mask), 1)
    outer = torch.triu(ps[:, :, None] * pe[:, None, :])
    return outer.amax(2).argmax(1), outer.amax(1).argmax(1)


@pytest.mark.parametrize("seed", range(5))
def test_span_decoding_equals_outer_product_form(seed):
    g = torch.Generator().manual_seed(seed)
    b, n = 16, 40
    lens = torch.randint(1, n + 1, (b,), generator=g)
    lens[0], lens[1] = 1, n
    mask = torch.arange(n)[None] < lens[:, None]
    start = torch.randn(b, n, generator=g)
    end = torch.randn(b, n, generator=g)
    end[2] = 0.0  # ties everywhere: the first argmax must win
    start[3, :] = torch.round(start[3, :])  # many ties
    s, e, score = decode_span(start, end, mask)
    rs, re = brute_force_span(start, end, mask)
    assert torch.equal(s, rs) and torch.equal(e, re)
    assert bool((s < lens).all() and (e < lens).all())
    ps = torch.softmax(mask_logits(start, mask), 1)
    pe = torch.softmax(mask_logits(end, mask), 1)
    assert torch.allclose(score, ps[torch.arange(b), s] * pe[torch.arange(b), e])


def test_hand_computed_span():
    # p_start ∝ (1, e³, e), p_end ∝ (e², 1, e). Start scores p_s(i)·max_{j≥i} p_e(j) ∝ (e², e⁴, e²);
    # end scores p_e(j)·max_{i≤j} p_s(i) ∝ (e², e³, e⁴). A lone argmax would pick end 0 instead.
    s, e, _ = decode_span(torch.tensor([[0.0, 3.0, 1.0]]), torch.tensor([[2.0, 0.0, 1.0]]),
                          torch.ones(1, 3, dtype=torch.bool))
    assert (s.item(), e.item()) == (1, 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_masking_is_finite_in_half_precision(dtype):
    logits = torch.tensor([[1.0, 2.0, -3.0]], dtype=dtype)
    mask = torch.tensor([[True, False, False]])
    p = torch.softmax(mask_logits(logits, mask), dim=-1)
    assert torch.isfinite(p).all() and p[0, 0] == 1


@pytest.mark.parametrize("change, message", [
    (lambda b: b.update(video=b["video"][..., :-1]), "dimension"),
    (lambda b: b["video"].__setitem__((0, 0, 0), float("nan")), "NaN"),
    (lambda b: b["video"].__setitem__((1, 2, 3), float("inf")), "inf"),
    (lambda b: b["word_ids"].__setitem__(0, 0), "at least one word"),
    (lambda b: b["video_len"].__setitem__(0, 0), "video lengths"),
    (lambda b: b.update(char_ids=b["char_ids"][:, :1]), "words"),
])
def test_bad_inputs_are_named(change, message):
    batch = random_batch(CFG, [4, 6], [3, 2], seed=5)
    change(batch)
    with pytest.raises(ValueError, match=message):
        run(MODEL, batch)


def test_padding_mode_is_checked():
    with pytest.raises(ValueError, match="padding"):
        run(MODEL, random_batch(CFG, [3], [2]), padding="alone")
