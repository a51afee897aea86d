"""Property-based fuzzing of `seqpan ground` (issue #11): generated JSONL files (bad bytes, BOMs,
deep nesting, NaN, overflowing numbers, wrong fields) and generated command lines.

Invariants: every non-blank line gets exactly one strict-JSON result in order, a well-formed request
line is served, and nothing else is affected; a command either succeeds or exits 2 with one line on
stderr, no traceback, and no output written.
"""
from __future__ import annotations

import codecs
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.cli.ground import ground_file
from engine.io.checkpoint import save_checkpoint
from tests.engine.test_engine import CFG, CHAR_DICT, MODEL, WORD_DICT, WORDS, make_engine
from tests.helpers import fuzz_settings, scratch_folder, run_cli

FOLDER = scratch_folder("seqpan-ground-fuzz-")
CKPT = save_checkpoint(FOLDER / "model.safetensors", MODEL, WORD_DICT, CHAR_DICT)
np.save(FOLDER / "v.npy", np.random.default_rng(1).standard_normal((30, CFG.visual_dim)).astype(np.float32))
ENGINE = make_engine(max_batch=4)

good_objects = st.fixed_dictionaries(
    {"features": st.just("v.npy"), "query": st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join),
     "duration": st.floats(0.5, 500)},
    optional={"id": st.one_of(st.text(max_size=6), st.integers()), "seed": st.integers(0, 99),
              "video_id": st.sampled_from(["a", "b"])})
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                     st.text(max_size=5)),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                           max_leaves=8)
good_lines = good_objects.map(lambda o: json.dumps(o).encode())
bad_lines = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda o, k, v: json.dumps({**o, k: v}).encode(), good_objects,
              st.sampled_from(["features", "query", "duration", "id", "seed", "video_id"]), json_values),
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.sampled_from([b'{"features": "v.npy", "query": "door", "duration": NaN}',
                     b'{"features": "v.npy", "query": "door", "duration": 1e999}',
                     b'{"features": "v.npy", "query": "door", "duration": 1' + b"0" * 5000 + b"}",
                     b'{"features": "v.npy", "query": "d\xffoor", "duration": 3}',
                     b'{"features": "v.npy", "query": "\\ud800", "duration": 3}',
                     b'{"features": "/etc/passwd", "query": "door", "duration": 3}',
                     b'{"features": "v.npy\\u0000", "query": "door", "duration": 3}']),
)
lines = st.lists(st.one_of(good_lines.map(lambda line: (True, line)), bad_lines.map(lambda line: (False, line))),
                 min_size=1, max_size=8)


@fuzz_settings(40)
@given(lines, st.booleans(), st.sampled_from([b"\n", b"\r\n"]))
def test_fuzz_jsonl_every_line_gets_its_own_strict_json_result(drawn, bom, newline):
    body = (codecs.BOM_UTF8 if bom else b"") + newline.join(line for _, line in drawn) + newline
    requests, out = FOLDER / "in.jsonl", FOLDER / "out.jsonl"
    requests.write_bytes(body)
    code = ground_file(ENGINE, requests, out)
    expected = [good for good, line in drawn if line.strip()]  # blank lines are skipped
    results = [json.loads(line, parse_constant=pytest.fail) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(results) == len(expected)
    assert all("start" in r for good, r in zip(expected, results) if good), results
    assert code == (0 if all("start" in r for r in results) else 1)
    for r in results:
        assert "error" not in r or ("\n" not in r["error"] and "internal error" not in r["error"]), r


cli_values = st.one_of(st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=12),
                       st.sampled_from(["1e308", "nan", "-1", "0", "inf", "3", "tpu", "cuda:1", "cpu", "",
                                        "fp16", "bf16", "reference", "engine", "nope"]))


@fuzz_settings(30)
@given(st.dictionaries(st.sampled_from(["--duration", "--query", "--device", "--precision", "--backend",
                                        "--max-batch"]), cli_values, max_size=3),
       st.sampled_from(["single", "file"]))
def test_fuzz_command_lines_succeed_or_fail_in_one_line_writing_nothing(options, mode):
    out = FOLDER / "cli-out.jsonl"
    out.unlink(missing_ok=True)
    (FOLDER / "one.jsonl").write_text(json.dumps({"features": "v.npy", "query": "person opens the door",
                                                   "duration": 12}) + "\n")
    args = ["ground", "--checkpoint", str(CKPT), "--max-batch", "2"]
    if mode == "single":
        args += ["--features", str(FOLDER / "v.npy"), "--query", "person opens the door", "--duration", "12"]
    else:
        args += ["--requests", str(FOLDER / "one.jsonl"), "--out", str(out)]
        options = {k: v for k, v in options.items() if k not in ("--duration", "--query")}
    for key, value in options.items():
        args += [f"{key}={value}"]
    proc = run_cli(*args)
    assert "Traceback" not in proc.stderr
    if proc.returncode == 0:
        assert (json.loads(proc.stdout) if mode == "single" else json.loads(out.read_text()))["start"] >= 0
    else:
        assert proc.returncode == 2 and proc.stdout == "" and not out.exists(), (proc.returncode, proc.stderr)
        lines = proc.stderr.strip().splitlines()  # argparse's own errors come after its usage lines
        assert [line for line in lines if not line.startswith(("usage:", " "))] == lines[-1:], proc.stderr
        assert lines[-1].startswith("seqpan ground: error: "), proc.stderr

