"""Annotation readers for the three formats, feature loading, GloVe vocabularies, bad input."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.data.dataset import DatasetError, build_dataset, collate, read_annotations
from engine.data.features import time_to_index
from engine.data.text import PAD, UNK


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_features(folder: Path, clips: dict[str, int], dim: int = 8, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for vid, n in clips.items():
        np.save(folder / f"{vid}.npy", rng.standard_normal((n, dim)).astype(np.float32))
    return folder


@pytest.fixture
def charades(tmp_path):
    ann = write(tmp_path / "train.txt", "AAA 1.5 6.0##A person opens the door.\n\n"
                                        "AAA -2 40##person sits down.\n"
                                        "BBB 3 9.25##Someone is cooking, then eats.\n")
    durations = write(tmp_path / "durations.json", json.dumps({"AAA": 30.0, "BBB": {"duration": 12.5}}))
    return ann, durations


def test_charades_records_are_clipped_and_tokenized(charades):
    ann, durations = charades
    records = read_annotations(ann, "charades", durations)
    assert [(r.vid, r.start, r.end, r.duration) for r in records] == [
        ("AAA", 1.5, 6.0, 30.0), ("AAA", 0.0, 30.0, 30.0), ("BBB", 3.0, 9.25, 12.5)]
    assert records[0].words == ("a", "person", "opens", "the", "door", ".")
    assert records[2].words == ("someone", "is", "cooking", ",", "then", "eats", ".")


def test_activitynet_records(tmp_path):
    ann = write(tmp_path / "val.json", json.dumps({
        "v_x": {"duration": 50.0, "timestamps": [[-1.0, 12.5], [20, 55.5]],
                "sentences": ["A man walks in.", " He sits."]}}))
    records = read_annotations(ann, "activitynet")
    assert [(r.vid, r.start, r.end, r.duration, r.words) for r in records] == [
        ("v_x", 0.0, 12.5, 50.0, ("a", "man", "walks", "in", ".")),
        ("v_x", 20.0, 50.0, 50.0, ("he", "sits", "."))]


def test_tacos_records_in_frames(tmp_path):
    ann = write(tmp_path / "test.json", json.dumps({
        "s13-d21.avi": {"fps": 29.4, "num_frames": 2940, "timestamps": [[294, 1470], [2646, 3000]],
                        "sentences": ["He takes out a knife.", "He cuts the onion."]}}))
    records = read_annotations(ann, "tacos")
    assert [r.vid for r in records] == ["s13-d21", "s13-d21"]
    assert records[0].duration == pytest.approx(100.0)
    assert (records[0].start, records[0].end) == pytest.approx((10.0, 50.0))
    assert (records[1].start, records[1].end) == pytest.approx((90.0, 100.0))


@pytest.mark.parametrize("text,message", [
    ("AAA 1 2 person walks\n", "train.txt:1: expected 'vid start end##sentence'"),
    ("AAA 1 2##ok.\nAAA one 2##bad start\n", "train.txt:2: start 'one' is not a number"),
    ("\nCCC 1 2##unknown video\n", "train.txt:2: video CCC has no duration"),
    ("AAA 5 2##backwards\n", "train.txt:1: moment (5.0, 2.0) of video AAA ends before it starts"),
    ("AAA 1 2##   \n", "train.txt:1: empty sentence"),
])
def test_malformed_charades_lines_name_file_and_line(tmp_path, charades, text, message):
    _, durations = charades
    with pytest.raises(DatasetError, match=re.escape(message)):
        read_annotations(write(tmp_path / "train.txt", text), "charades", durations)


def test_malformed_json_names_file_and_place(tmp_path):
    with pytest.raises(DatasetError, match=r"val.json:3: malformed JSON"):
        read_annotations(write(tmp_path / "val.json", '{\n"v": {"duration": 3,\n oops}}'), "activitynet")
    bad = write(tmp_path / "val.json", json.dumps({"v_1": {"duration": 3, "timestamps": [[0, 1]]}}))
    with pytest.raises(DatasetError, match="val.json: video v_1: expected an object with keys"):
        read_annotations(bad, "activitynet")
    bad = write(tmp_path / "val.json", json.dumps({"v_1": {"duration": 3, "timestamps": [[0]], "sentences": ["x"]}}))
    with pytest.raises(DatasetError, match="video v_1, moment 0: expected a"):
        read_annotations(bad, "activitynet")


def test_features_are_sampled_and_missing_videos_skipped(tmp_path, charades):
    ann, durations = charades
    records = read_annotations(ann, "charades", durations)
    features = write_features(tmp_path / "feats", {"AAA": 20})  # BBB has no feature file
    data = build_dataset(features, records[:2], records[2:], max_pos_len=8, visual_dim=8, word_dim=4)
    assert data.skipped == 1 and len(data.train) == 2 and data.val == []
    assert data.features["AAA"].shape == (8, 8)
    sample = data.train[0]
    assert sample.num_clips == 8
    assert (sample.s_ind, sample.e_ind) == time_to_index(1.5, 6.0, 8, 30.0)
    assert data.word_vectors.shape == (len(data.word_dict) - 2, 4)
    assert list(data.word_dict)[:2] == [PAD, UNK]


def test_glove_vectors_define_the_vocabulary(tmp_path, charades):
    ann, durations = charades
    records = read_annotations(ann, "charades", durations)
    features = write_features(tmp_path / "feats", {"AAA": 5, "BBB": 3})
    glove = write(tmp_path / "glove.txt", "person 1 2 3 4\ndoor 0.5 0 0 -1\nbroken 1 2\n. 9 9 9 9\nzebra 1 1 1 1\n")
    data = build_dataset(features, records, [], max_pos_len=8, visual_dim=8, glove=glove, word_dim=4)
    # only words with a vector, most frequent first (as the original); others map to UNK
    assert data.word_dict == {PAD: 0, UNK: 1, ".": 2, "person": 3, "door": 4}
    np.testing.assert_array_equal(data.word_vectors, [[9, 9, 9, 9], [1, 2, 3, 4], [0.5, 0, 0, -1]])
    assert data.train[0].word_ids == [1, 3, 1, 1, 4, 2]  # a person opens the door .


def test_collate_pads_and_labels(tmp_path, charades):
    ann, durations = charades
    records = read_annotations(ann, "charades", durations)
    features = write_features(tmp_path / "feats", {"AAA": 6, "BBB": 4})
    data = build_dataset(features, records, [], max_pos_len=8, visual_dim=8, word_dim=4)
    batch = collate(data.train, data.features)
    assert batch.video.shape == (3, 6, 8) and batch.video_len.tolist() == [6, 6, 4]
    assert batch.word_ids.shape == (3, 7) and batch.char_ids.shape[:2] == (3, 7)
    assert not batch.video[2, 4:].any() and not batch.s_labels[2, 4:].any()
    np.testing.assert_allclose(batch.s_labels.sum(1).numpy(), 1.0, rtol=1e-6)
    assert batch.match_labels.shape == (3, 6)


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_train_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, charades, capsys):
    ann, durations = charades
    out = tmp_path / "run"
    base = ["train", "--format", "charades", "--durations", str(durations), "--train", str(ann), "--val", str(ann),
            "--out", str(out), "--max-steps", "1"]
    cases = [
        (["--features", str(tmp_path / "nowhere")], "features directory not found"),
        (["--features", str(tmp_path)], "no training query has a feature file"),
    ]
    for extra, message in cases:
        code, err = run_cli(base + extra, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    argv = base + ["--features", str(tmp_path)]
    argv[argv.index("--train") + 1] = str(tmp_path / "missing.txt")
    code, err = run_cli(argv, capsys)
    assert code == 2 and "annotation file not found" in err
    write(ann, "AAA 1 2##fine.\nAAA 1##broken\n")
    code, err = run_cli(base + ["--features", str(tmp_path)], capsys)
    assert code == 2 and "train.txt:2:" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
