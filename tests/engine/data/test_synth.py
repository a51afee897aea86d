"""The synthetic-feature dataset: real annotations, splits by video, features that carry the
queries' meaning, and the position-only baselines."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from engine.data.dataset import Record, read_annotations
from engine.data.synth import (
    CHARADES_DURATIONS,
    CHARADES_TEST,
    DISTRACTOR_CLIPS,
    FEATURE_SCALE,
    build_synthetic_charades,
    clip_content,
    position_baselines,
)
from engine.data.text import load_glove

SUBSET_LINES = 60


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    lines = CHARADES_TEST.read_text(encoding="utf-8").splitlines()[:SUBSET_LINES]
    path = root / "subset.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root, path


def build(root, annotations, name, **kwargs):
    return build_synthetic_charades(root / name, annotations=annotations, durations=CHARADES_DURATIONS, **kwargs)


def test_shipped_annotations_are_charades_sta_test():
    records = read_annotations(CHARADES_TEST, "charades", CHARADES_DURATIONS)
    assert len(records) == 3720 and len({r.vid for r in records}) == 1334


def test_splits_are_by_video_deterministic_and_complete(subset):
    root, annotations = subset
    a, b = build(root, annotations, "a", seed=5), build(root, annotations, "b", seed=5)
    lines = {name: path.read_text().splitlines() for name, path in a.splits.items()}
    assert sorted(line for ls in lines.values() for line in ls) == sorted(annotations.read_text().splitlines())
    vids = {name: {line.split()[0] for line in ls} for name, ls in lines.items()}
    assert not (vids["train"] & vids["val"] or vids["train"] & vids["test"] or vids["val"] & vids["test"])
    assert all(vids.values())
    assert {n: p.read_text() for n, p in b.splits.items()} == {n: "\n".join(ls) + "\n" for n, ls in lines.items()}
    for feature in sorted(a.features.glob("*.npy"))[:5]:
        np.testing.assert_array_equal(np.load(feature), np.load(b.features / feature.name))
    c = build(root, annotations, "c", seed=6)
    assert any(not np.array_equal(np.load(f), np.load(c.features / f.name)) for f in a.features.glob("*.npy"))


def test_clips_carry_the_meaning_of_their_moments_query(subset):
    """Without noise, a clip inside exactly one query's moment is that query's meaning (its
    words' vectors weighted by log(queries / queries with the word), summed, normalized) under
    an orthonormal map: inner products of such clips' features are FEATURE_SCALE^2 times those
    of the meanings."""
    root, annotations = subset
    synth = build(root, annotations, "clean", seed=0, noise=0.0)
    vectors = load_glove(synth.glove)
    records = read_annotations(annotations, "charades", synth.durations)
    df = Counter(w for r in records for w in set(r.words))
    clips, meanings = [], []
    for vid in sorted({r.vid for r in records}):
        feats = np.load(synth.features / f"{vid}.npy")
        own = [r for r in records if r.vid == vid]
        centers = (np.arange(len(feats)) + 0.5) * own[0].duration / len(feats)
        inside = np.array([(centers >= r.start) & (centers <= r.end) for r in own])
        for r, mask in zip(own, inside):
            pure = np.flatnonzero(mask & (inside.sum(0) == 1))
            if len(pure):
                meaning = sum(np.log(len(records) / df[w]) * vectors[w] for w in r.words)
                clips.append(feats[pure[0]])
                meanings.append(meaning / np.linalg.norm(meaning))
    assert len(clips) >= 10
    clips, meanings = np.array(clips, np.float64), np.array(meanings, np.float64)
    np.testing.assert_allclose(clips @ clips.T / FEATURE_SCALE**2, meanings @ meanings.T, atol=1e-4)


def test_clips_outside_moments_are_distractor_segments():
    rng = np.random.default_rng(0)
    meaning, distractors = np.eye(300)[0], np.eye(300)[1:4]
    content = clip_content(40.0, 40, [(10.0, 20.0, meaning)], distractors, rng)
    inside = np.zeros(40, bool)
    inside[10:20] = True  # clip centers 10.5 .. 19.5
    np.testing.assert_array_equal(content[inside], np.tile(meaning, (10, 1)))
    rows = [int(np.flatnonzero(c[1:4])[0]) for c in content[~inside]]
    assert all(np.count_nonzero(c) == 1 for c in content[~inside])
    runs = np.diff(np.flatnonzero(np.diff([-1, *rows[:10], -1]) != 0))  # segments before the moment
    assert runs.sum() == 10 and all(r <= DISTRACTOR_CLIPS[1] for r in runs)


def test_position_baselines_by_hand():
    def rec(start, end, duration):
        return Record("V", start, end, duration, "x", ("x",))
    train = [rec(0.0, 5.0, 10.0), rec(10.0, 20.0, 20.0)]  # normalized spans (0, .5) and (.5, 1)
    test = [rec(5.0, 15.0, 20.0), rec(0.0, 4.0, 40.0)]
    scores = position_baselines(train, test, num_clips=4)
    # mean span (0.25, 0.75): (5, 15) IoU 1; (10, 30) vs (0, 4) IoU 0
    assert scores["mean_span"] == pytest.approx({"r1_iou03": 0.5, "r1_iou05": 0.5, "r1_iou07": 0.5, "miou": 0.5})
    # most frequent index pair: (0, 1) and (2, 3) tie, the first seen wins -> first half of the video:
    # (0, 10) vs (5, 15) IoU 1/3; (0, 20) vs (0, 4) IoU 0.2
    assert scores["frequent_span"] == pytest.approx({"r1_iou03": 0.5, "r1_iou05": 0.0, "r1_iou07": 0.0,
                                                     "miou": (1 / 3 + 0.2) / 2})
