"""`seqpan ground --ray`: on a local Ray with 2 workers, the same results as the single-process
command, in input order, each bad request its own error, Parquet in and out, and a worker killed
mid-run retried by Ray without losing or duplicating a result."""
from __future__ import annotations

import codecs
import json
import os

import numpy as np
import pytest

from tests.engine.cli.test_ground import write_ground_files
from tests.engine.serve.conftest import assert_same_answers
from tests.engine.test_engine import CFG
from tests.helpers import run_cli

pytestmark = pytest.mark.usefixtures("ray_session")
QUERIES = ["person opens the door", "a person sits on chair", "takes book", "walks into room", "zebra"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A checkpoint, feature files, and a JSONL of 40 lines: by path (relative and absolute), inline,
    and bad ones (not JSON, NaN features, no duration, empty query), a BOM and blank lines."""
    root = tmp_path_factory.mktemp("ground_ray")
    ckpt = write_ground_files(root)
    gen = np.random.default_rng(1)  # the inline features
    lines = []
    for i in range(40):
        request = {"features": ("a.npy", "b.npy", str(root / "c.npy"))[i % 3], "query": QUERIES[i % 5],
                   "duration": 10.0 + i}
        if i % 4 == 1:
            request = {**request, "features": gen.standard_normal((5 + i, CFG.visual_dim)).round(3).tolist()}
        if i % 3 == 0:
            request["id"] = f"q{i}"
        lines.append(json.dumps(request))
    lines[7] = "{not json"
    lines[12] = json.dumps({"features": "nan.npy", "query": "door", "duration": 3, "id": "nan"})
    lines[20] = json.dumps({"features": "a.npy", "query": "door", "id": "no-duration"})
    lines[21] = ""
    lines[33] = json.dumps({"features": "a.npy", "query": "  ", "duration": 4})
    (root / "in.jsonl").write_bytes(codecs.BOM_UTF8 + "\n".join(lines).encode() + b"\n\n")
    return root, ckpt


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def ground(ckpt, requests, out, *extra):
    return run_cli("ground", "--checkpoint", str(ckpt), "--requests", str(requests), "--out", str(out),
                   "--backend", "reference", *extra)


def test_same_lines_in_the_same_order_as_one_process(files):
    root, ckpt = files
    alone = ground(ckpt, root / "in.jsonl", root / "alone.jsonl")
    on_ray = ground(ckpt, root / "in.jsonl", root / "ray.jsonl", "--ray", "--workers", "2", "--batch-size", "3")
    assert alone.returncode == on_ray.returncode == 1, on_ray.stderr
    results = read_lines(root / "ray.jsonl")
    assert_same_answers(results, read_lines(root / "alone.jsonl"))  # scores to float32 rounding: other batches
    assert len(results) == 39 and results[0]["id"] == "q0" and results[1]["id"] == 2  # line numbers as ids
    assert results[7]["error"].startswith("line 8: not valid JSON") and "NaN" in results[12]["error"]
    assert "duration" in results[20]["error"] and "empty" in results[32]["error"]
    assert sum("error" in r for r in results) == 4 and "Traceback" not in on_ray.stderr
    assert "grounding" in on_ray.stderr and "35 grounded, 4 failed" in on_ray.stderr


def test_parquet_in_and_out(files):
    """A Parquet file of requests (paths or inline lists; a null as an absent field) gives what the same
    requests as JSONL give alone, written as Parquet: ids as text, `row N` for `line N`."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    root, ckpt = files
    gen = np.random.default_rng(1)
    inline = [gen.standard_normal((3 + i, CFG.visual_dim)).round(3).tolist() for i in range(4)]
    kinds = {"paths": [(("a.npy", "b.npy", "c.npy")[i % 3]) for i in range(7)], "inline": inline}
    for name, features in kinds.items():
        rows = [{"features": f, "query": QUERIES[i % 5], "duration": None if i == 2 else 5.0 + i,
                 "id": None if i % 2 else f"{name}{i}"} for i, f in enumerate(features)]
        pq.write_table(pa.Table.from_pylist(rows), root / f"{name}.parquet", row_group_size=2)
        (root / f"{name}.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n"
                                                    for r in rows))
        on_ray = ground(ckpt, root / f"{name}.parquet", root / f"{name}-out.parquet", "--ray", "--batch-size", "3")
        alone = ground(ckpt, root / f"{name}.jsonl", root / f"{name}-alone.jsonl")
        assert on_ray.returncode == alone.returncode == 1, on_ray.stderr
        expected = [{**e, "id": e["id"] if isinstance(e["id"], str) else str(e["id"])}
                    | ({"error": e["error"].replace("line 3:", "row 3:")} if "error" in e else {})
                    for e in read_lines(root / f"{name}-alone.jsonl")]
        got = [{k: v for k, v in r.items() if v is not None or k == "id"}
               for r in pq.read_table(root / f"{name}-out.parquet").to_pylist()]
        assert got[1]["id"] == "2" and got[2]["error"].startswith("row 3: missing duration")
        assert_same_answers(got, expected)


def test_user_errors_are_one_line(files, tmp_path):
    root, ckpt = files
    (tmp_path / "bad.parquet").write_text("not parquet")
    proc = ground(ckpt, root / "in.jsonl", tmp_path / "o.jsonl", "--workers", "2")
    assert proc.returncode == 2 and "only with --ray" in proc.stderr, proc.stderr
    proc = run_cli("ground", "--checkpoint", str(ckpt), "--features", str(root / "a.npy"), "--query", "door",
                   "--duration", "3", "--ray")
    assert proc.returncode == 2 and "--ray grounds a file" in proc.stderr and proc.stdout == ""
    for requests, words in ((root / "absent.jsonl", "requests file not found"),
                            (tmp_path / "bad.parquet", "not a readable Parquet file")):
        proc = ground(ckpt, requests, tmp_path / "o.jsonl", "--ray")
        assert proc.returncode == 2 and words in proc.stderr.splitlines()[-1] and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()


class DiesOnce:
    """Builds the real engine, whose `ground` ends its process (as a killed worker) the first time a
    batch holds request `trigger`; `marker` records that it happened."""

    def __init__(self, build, marker, trigger):
        self.build, self.marker, self.trigger = build, str(marker), trigger

    def __call__(self):
        engine = self.build()
        ground, marker, trigger = engine.ground, self.marker, self.trigger

        def dying_ground(requests, progress=None):
            if any(r.id == trigger for r in requests) and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            return ground(requests, progress)

        engine.ground = dying_ground
        return engine


def test_a_killed_worker_is_retried_without_losing_or_duplicating(files, tmp_path):
    from engine.offline.ground import EngineSpec, ground_requests
    from engine.offline.results import ResultWriter

    root, ckpt = files
    make = DiesOnce(EngineSpec(str(ckpt), device="cpu", backend="reference", threads=1).build,
                    tmp_path / "died", "q18")
    rows, tables = ground_requests(root / "in.jsonl", make, 2, 3, {"num_cpus": 1})
    ResultWriter(tmp_path / "out.jsonl").write(tables)
    assert (tmp_path / "died").exists()  # a worker did die mid-run
    expected = ground(ckpt, root / "in.jsonl", tmp_path / "alone.jsonl")
    assert expected.returncode == 1 and rows == 41
    assert_same_answers(read_lines(tmp_path / "out.jsonl"), read_lines(tmp_path / "alone.jsonl"))


def test_video_requests_are_extracted_on_the_workers(video_clip, video_checkpoint, i3d_weights, tmp_path):
    pytest.importorskip("av", reason="the video path needs PyAV (pip install -e '.[video]')")
    _, video, _ = video_clip
    lines = [json.dumps({"video": str(video), "query": "person opens the door", "id": "v1"}),
             json.dumps({"video": "missing.mp4", "query": "door", "id": "v2"})]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    outs = {}
    for name, extra in (("alone", ()), ("ray", ("--ray",))):
        outs[name] = run_cli("ground", "--checkpoint", str(video_checkpoint), "--i3d", str(i3d_weights),
                             "--requests", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / f"{name}.jsonl"),
                             "--device", "cpu", "--backend", "reference", *extra)
    assert outs["alone"].returncode == outs["ray"].returncode == 1, outs["ray"].stderr
    results = read_lines(tmp_path / "ray.jsonl")
    assert "start" in results[0] and "no such file" in results[1]["error"]
    assert_same_answers(results, read_lines(tmp_path / "alone.jsonl"))
