"""`seqpan ground`: one query, a JSONL file, and every kind of bad input."""
from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from engine import GroundingEngine, GroundingRequest
from engine.io.checkpoint import save_checkpoint
from tests.engine.test_engine import CFG, CHAR_DICT, MODEL, WORD_DICT
from tests.helpers import run_cli


def write_ground_files(root):
    """The test model's checkpoint and feature files a.npy (20 clips), b.npy (70), c.npy (1) and
    nan.npy (NaN values) in `root`; the checkpoint's path."""
    ckpt = save_checkpoint(root / "model.safetensors", MODEL, WORD_DICT, CHAR_DICT)
    gen = np.random.default_rng(0)
    for name, clips in (("a", 20), ("b", 70), ("c", 1)):
        np.save(root / f"{name}.npy", gen.standard_normal((clips, CFG.visual_dim)).astype(np.float32))
    np.save(root / "nan.npy", np.full((4, CFG.visual_dim), np.nan, np.float32))
    return ckpt


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ground")
    return root, write_ground_files(root)


def test_single_query_prints_json(setup):
    root, ckpt = setup
    proc = run_cli("ground", "--checkpoint", str(ckpt), "--features", str(root / "a.npy"),
                   "--query", "person opens the door", "--duration", "31.5")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    engine = GroundingEngine.from_checkpoint(ckpt, device="cpu")
    expected = engine.ground([GroundingRequest(str(root / "a.npy"), "person opens the door", 31.5)])[0]
    assert result["start_index"] == expected.start_index and result["end_index"] == expected.end_index
    assert result["start"] == pytest.approx(expected.start) and 0 <= result["start"] <= result["end"] <= 31.5


def test_requests_file_keeps_order_and_reports_bad_lines(setup):
    root, ckpt = setup
    lines = [
        json.dumps({"features": "a.npy", "query": "person opens the door", "duration": 30, "id": "q1"}),
        "{not json",
        json.dumps({"features": "b.npy", "query": "a person sits on chair", "duration": 80.0}),
        "",
        json.dumps({"features": "nan.npy", "query": "walks into room", "duration": 10, "id": "bad-features"}),
        json.dumps({"features": "c.npy", "query": "takes book", "id": "no-duration"}),
        json.dumps({"features": "c.npy", "query": "   ", "duration": 5, "id": "empty"}),
        json.dumps({"features": str(root / "c.npy"), "query": "zebra", "duration": 5, "id": "unk"}),
    ]
    (root / "in.jsonl").write_text("\n".join(lines) + "\n")
    out = root / "out.jsonl"
    proc = run_cli("ground", "--checkpoint", str(ckpt), "--requests", str(root / "in.jsonl"), "--out", str(out))
    assert proc.returncode == 1  # some requests failed; the others are served
    results = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in results] == ["q1", None, 3, "bad-features", "no-duration", "empty", "unk"]
    assert "start" in results[0] and "start" in results[2] and "start" in results[6]
    assert results[1]["error"].startswith("line 2:")
    assert "NaN" in results[3]["error"] and "duration" in results[4]["error"] and "empty" in results[5]["error"]
    assert "Traceback" not in proc.stderr and "line 2" in proc.stderr


def test_requests_file_lines_may_carry_binary_features(setup):
    """A line's features as base64 float32 with their shape answer as the same .npy file does; a
    line naming a registered video (a server's) is that line's error."""
    root, ckpt = setup
    video = np.load(root / "b.npy")
    sent = {"shape": list(video.shape), "dtype": "float32", "base64": base64.b64encode(video.astype("<f4").tobytes()).decode()}
    lines = [{"id": "path", "features": "b.npy"}, {"id": "base64", "features": sent},
             {"id": "registered", "features": {"registered": "b"}}]
    (root / "binary.jsonl").write_text("".join(json.dumps({**line, "query": "a person sits on chair", "duration": 80.0})
                                               + "\n" for line in lines))
    out = root / "binary-out.jsonl"
    proc = run_cli("ground", "--checkpoint", str(ckpt), "--requests", str(root / "binary.jsonl"), "--out", str(out))
    path, binary, registered = [json.loads(x) for x in out.read_text().splitlines()]
    assert proc.returncode == 1 and "start" in path and {**binary, "id": "path"} == path
    assert registered["error"] == ("features name the registered video 'b': only a server keeps registered videos "
                                   "(PUT /v1/videos/ID on seqpan serve)")


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "{root}/missing.safetensors", "--features", "{root}/a.npy", "--query", "x", "--duration", "3"],
     "checkpoint not found"),
    (["--checkpoint", "{ckpt}", "--features", "{root}/a.npy", "--query", "x"], "give --features"),
    (["--checkpoint", "{ckpt}", "--features", "{root}/a.npy", "--query", "  ", "--duration", "3"], "empty"),
    (["--checkpoint", "{ckpt}", "--features", "{root}/a.npy", "--query", "door", "--duration", "0"], "positive"),
    (["--checkpoint", "{ckpt}", "--features", "{root}/nan.npy", "--query", "door", "--duration", "3"], "NaN"),
    (["--checkpoint", "{ckpt}", "--features", "{root}/zzz.npy", "--query", "door", "--duration", "3"], "not found"),
    (["--checkpoint", "{ckpt}", "--requests", "{root}/none.jsonl", "--out", "{root}/o.jsonl"], "not found"),
    (["--checkpoint", "{root}/a.npy", "--features", "{root}/a.npy", "--query", "x", "--duration", "3"], "corrupt"),
])
def test_user_errors_are_one_line_with_nonzero_exit(setup, args, message):
    root, ckpt = setup
    proc = run_cli("ground", *[a.format(root=root, ckpt=ckpt) for a in args])
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == "" and not (root / "o.jsonl").exists()


def strict_json_lines(path):
    """Every line of a results file as strict JSON (NaN/Infinity refused)."""
    def refuse(name):
        raise ValueError(f"{name} in output")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text(encoding="utf-8").splitlines()]


def test_issue11_2_bad_lines_do_not_sink_the_file(setup):
    """Issue #11 (2): each of these lines made `seqpan ground --requests` exit 1 with a traceback and
    no output for anyone; now each is its own line's error and the others are served."""
    root, ckpt = setup
    with open(root / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10**30, 24)})
    good = json.dumps({"features": "a.npy", "query": "person opens the door", "duration": 30, "id": "good"}).encode()
    lines = [
        good,
        b'{"features": "a.npy", "query": "door", "duration": 1' + b"0" * 400 + b', "id": "overflow"}',
        json.dumps({"features": "a\0.npy", "query": "door", "duration": 3, "id": "nul"}).encode(),
        json.dumps({"features": "huge.npy", "query": "door", "duration": 3, "id": "huge"}).encode(),
        b"[" * 100_000 + b"]" * 100_000,
        b'{"features": "a.npy", "query": "caf\xe9", "duration": 3, "id": "latin-1"}',
        json.dumps({"features": "a.npy", "query": 5, "duration": 3, "id": "int-query"}).encode(),
        b'{"features": "a.npy", "query": "door", "duration": 3, "id": NaN}',
        good,
    ]
    (root / "bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    out = root / "bad-out.jsonl"
    proc = run_cli("ground", "--checkpoint", str(ckpt), "--requests", str(root / "bad.jsonl"), "--out", str(out))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    results = strict_json_lines(out)
    assert [r["id"] for r in results] == ["good", "overflow", "nul", "huge", None, None, "int-query", None, "good"]
    assert "start" in results[0] and results[0] == results[-1]
    messages = [r.get("error", "") for r in results[1:-1]]
    for message, expected in zip(messages, ["too large", "NUL", "more than the limit", "nested too deeply",
                                            "UTF-8", "query must be a string", "NaN"]):
        assert expected in message, messages


def test_issue11_6_huge_duration_is_an_error_not_nan(setup):
    """Issue #11 (6): `--duration 1e308` printed "start": NaN, "end": Infinity with exit 0."""
    root, ckpt = setup
    proc = run_cli("ground", "--checkpoint", str(ckpt), "--features", str(root / "a.npy"), "--query", "door",
                   "--duration", "1e308")
    assert proc.returncode == 2 and "limit" in proc.stderr and proc.stdout == ""


def test_issue11_9_utf8_bom_is_skipped(setup):
    """Issue #11 (9): a byte-order mark made line 1 "not JSON"."""
    root, ckpt = setup
    line = json.dumps({"features": "a.npy", "query": "person opens the door", "duration": 30, "id": "bom"})
    (root / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + line.encode() + b"\r\n")
    out = root / "bom-out.jsonl"
    proc = run_cli("ground", "--checkpoint", str(ckpt), "--requests", str(root / "bom.jsonl"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert strict_json_lines(out)[0]["id"] == "bom" and "start" in strict_json_lines(out)[0]


@pytest.mark.parametrize("extra, message", [
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--device", "cuda:99"], "cuda"),
    (["--out", "{root}/a.npy/out.jsonl"], "Not a directory"),
    (["--out", "{root}"], "folder or another special file"),
])
def test_issue11_9_bad_device_and_out_are_one_line_errors(setup, extra, message):
    """Issue #11 (9): `--device tpu` and an `--out` under a file gave tracebacks."""
    root, ckpt = setup
    (root / "one.jsonl").write_text(json.dumps({"features": "a.npy", "query": "door", "duration": 3}) + "\n")
    args = ["--checkpoint", str(ckpt), "--requests", str(root / "one.jsonl"), "--out", str(root / "o.jsonl")]
    if extra[0] == "--out":
        args[-1] = extra[1].format(root=root)
    else:
        args += extra
    proc = run_cli("ground", *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (root / "o.jsonl").exists()


def test_issue11_9_read_only_out_fails_before_any_work(setup, monkeypatch):
    """Issue #11 (9): an `--out` on a read-only filesystem gave a traceback after all the work.
    (The read-only filesystem is simulated: os.access reports EROFS's answer, as it does there.)"""
    import os

    from engine.cli import ground as ground_cli

    root, ckpt = setup
    (root / "one.jsonl").write_text(json.dumps({"features": "a.npy", "query": "door", "duration": 3}) + "\n")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: str(p) != str(root / "ro") and real_access(p, mode))
    monkeypatch.setattr(ground_cli.GroundingEngine, "from_checkpoint", lambda *a, **k: pytest.fail("worked first"))
    (root / "ro").mkdir(exist_ok=True)
    proc = run_cli("ground", "--checkpoint", str(ckpt), "--requests", str(root / "one.jsonl"), "--out",
                   str(root / "ro" / "o.jsonl"))
    assert proc.returncode == 2 and "is not writable" in proc.stderr and "Traceback" not in proc.stderr


RESULT_KEYS = {"id", "start", "end", "start_index", "end_index", "score"}
MOMENT_KEYS = {"start", "end", "start_index", "end_index", "score"}


def test_json_key_sets_are_the_documented_ones(setup):
    """README: one query prints {"id", "start", "end", "start_index", "end_index", "score"}; --top-k adds
    `moments` of {start, end, start_index, end_index, score}; a failed request is {"id", "error"}."""
    root, ckpt = setup
    base = ["ground", "--checkpoint", str(ckpt), "--features", str(root / "b.npy"), "--query", "person opens the door",
            "--duration", "40"]
    one = run_cli(*base)
    assert one.returncode == 0 and set(json.loads(one.stdout)) == RESULT_KEYS
    top = json.loads(run_cli(*base, "--top-k", "3").stdout)
    assert set(top) == RESULT_KEYS | {"moments"} and len(top["moments"]) == 3
    assert all(set(m) == MOMENT_KEYS for m in top["moments"])
    assert {k: top["moments"][0][k] for k in MOMENT_KEYS} == {k: top[k] for k in MOMENT_KEYS}
    (root / "keys.jsonl").write_text(json.dumps({"features": "a.npy", "query": "door", "duration": 3, "id": 7}) + "\n"
                                     + json.dumps({"features": "nan.npy", "query": "door", "duration": 3}) + "\n")
    out = root / "keys-out.jsonl"
    run_cli("ground", "--checkpoint", str(ckpt), "--requests", str(root / "keys.jsonl"), "--out", str(out))
    served, failed = strict_json_lines(out)
    assert set(served) == RESULT_KEYS and set(failed) == {"id", "error"}


@pytest.mark.parametrize("args, message", [
    (["--max-batch", "0"], "max.batch"),
    (["--max-batch", "-3"], "max.batch"),
    (["--features", "{root}/a.npy"], "--features"),
    (["--query", "door"], "--query"),
    (["--duration", "3"], "--duration"),
])
def test_requests_options_that_do_not_fit_are_refused(setup, args, message):
    root, ckpt = setup
    (root / "one.jsonl").write_text(json.dumps({"features": "a.npy", "query": "door", "duration": 3}) + "\n")
    proc = run_cli("ground", "--checkpoint", str(ckpt), "--requests", str(root / "one.jsonl"), "--out",
                   str(root / "o.jsonl"), *[a.format(root=root) for a in args])
    assert proc.returncode == 2 and re.search(message, proc.stderr), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr and not (root / "o.jsonl").exists()


def test_a_run_that_fails_part_way_leaves_no_output(setup, monkeypatch):
    """A run that dies while writing its results (here: the third result cannot be written) leaves
    neither a partial --out nor a temporary file, and an older --out is kept whole."""
    from engine.cli import ground as ground_cli

    root, ckpt = setup
    folder = root / "part-way"
    folder.mkdir()
    lines = [json.dumps({"features": str(root / "a.npy"), "query": q, "duration": 3}) for q in ("door", "a chair", "room")]
    (folder / "in.jsonl").write_text("\n".join(lines) + "\n")
    real_dumps, written = ground_cli.dumps_result, []

    def dumps_then_fail(result):
        if len(written) == 2:
            raise KeyboardInterrupt  # the user's Ctrl-C, or anything else
        written.append(result)
        return real_dumps(result)

    monkeypatch.setattr(ground_cli, "dumps_result", dumps_then_fail)
    args = ["ground", "--checkpoint", str(ckpt), "--requests", str(folder / "in.jsonl"), "--out"]
    proc = run_cli(*args, str(folder / "out.jsonl"))
    assert proc.returncode == 130 and "interrupted" in proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["in.jsonl"]
    (folder / "old.jsonl").write_text("old results\n")
    written.clear()
    assert run_cli(*args, str(folder / "old.jsonl")).returncode == 130
    assert sorted(p.name for p in folder.iterdir()) == ["in.jsonl", "old.jsonl"]
    assert (folder / "old.jsonl").read_text() == "old results\n"


def test_requests_lines_ask_their_own_top_k_unless_the_option_says(setup):
    """A line's `top_k`/`nms` are its own (as in a POST /v1/ground entry); --top-k and --nms, when given,
    apply to every line; a bad top_k is that line's error alone."""
    root, ckpt = setup
    lines = [{"features": "b.npy", "query": "door", "duration": 9, "top_k": 4},
             {"features": "b.npy", "query": "door", "duration": 9, "top_k": 4, "nms": 0.0},
             {"features": "b.npy", "query": "door", "duration": 9},
             {"features": "b.npy", "query": "door", "duration": 9, "top_k": 0}]
    (root / "topk.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = root / "topk-out.jsonl"
    base = ["ground", "--checkpoint", str(ckpt), "--requests", str(root / "topk.jsonl"), "--out", str(out)]
    assert run_cli(*base).returncode == 1
    own = [json.loads(line) for line in out.read_text().splitlines()]
    engine = GroundingEngine.from_checkpoint(ckpt, device="cpu")
    expected = engine.ground([GroundingRequest(str(root / "b.npy"), "door", 9.0, top_k=4),
                              GroundingRequest(str(root / "b.npy"), "door", 9.0, top_k=4, nms=0.0)])
    assert [m["start_index"] for m in own[0]["moments"]] == [m["start_index"] for m in expected[0].moments]
    assert [(m["start_index"], m["end_index"]) for m in own[1]["moments"]] == \
           [(m["start_index"], m["end_index"]) for m in expected[1].moments]
    assert "moments" not in own[2]
    assert own[3]["error"] == "line 4: top_k must be an integer of at least 1, got 0"
    run_cli(*base, "--top-k", "2")
    forced = [json.loads(line) for line in out.read_text().splitlines()]
    assert [len(r["moments"]) for r in forced[:3]] == [2, 2, 2]
