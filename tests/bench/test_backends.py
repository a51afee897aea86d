"""`seqpan bench`: its results schema, the speed-up math, the report tables, the workloads built from
the shipped annotations, and the GPU check script's syntax (all on CPU)."""
from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from collections import Counter

import pytest
import torch

from bench.report import cpu_table, headline_table, plot_latency, render_markdown, rows_table, speedups
from bench.backends import Bench, BenchOptions, engine_ground, engine_step
from bench.workloads import load_workload, model_inputs, random_model, requests
from engine import GroundingEngine
from engine.backends import BACKENDS, BackendError
from engine.data.shipped import ACTIVITYNET_VAL, CHARADES_TEST
from engine.data.text import tokenize
from tests.conftest import REPO
from tests.helpers import run_cli

ROW_TYPES = {"workload": str, "backend": str, "precision": str, "batch": int, "n_clips": int, "n_words": int,
             "p50_ms": float, "p99_ms": float, "queries_per_s": float}
QUICK_WORKLOADS = ("charades", "activitynet")
CPU_BACKENDS = ("reference-eager", "engine-reference", "engine-auto")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These tests time nothing: one thread keeps them fast on a shared CPU, where more crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `seqpan bench --quick` on CPU (without the baselines that compile for minutes)."""
    out = tmp_path_factory.mktemp("bench")
    result = run_cli("bench", "--quick", "--device", "cpu", "--workloads", ",".join(QUICK_WORKLOADS),
                     "--backends", ",".join(CPU_BACKENDS), "--out", str(out))
    return result, out


def test_quick_bench_writes_results_of_the_schema(quick_run):
    result, out = quick_run
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    env = results["env"]
    assert env["gpu"] is None and env["device"] == "cpu" and env["torch"] == torch.__version__
    assert {"triton", "date", "notes", "skipped"} <= set(env)
    assert any("GroundingEngine.ground(requests) end to end" in note for note in env["notes"])
    assert env["skipped"] == []
    rows = results["rows"]
    for row in rows:
        assert set(row) == set(ROW_TYPES)
        for key, kind in ROW_TYPES.items():
            assert type(row[key]) is kind, (key, row[key])
        assert row["precision"] == "fp32"
        assert math.isfinite(row["p50_ms"]) and 0 < row["p50_ms"] <= row["p99_ms"]
        assert row["queries_per_s"] == pytest.approx(row["batch"] / row["p50_ms"] * 1e3)
        assert 1 <= row["n_words"] <= row["n_clips"]
    assert sorted((r["workload"], r["backend"], r["batch"]) for r in rows) == sorted(
        (w, b, n) for w in QUICK_WORKLOADS for b in CPU_BACKENDS for n in (1, 4))
    assert {r["workload"]: r["n_clips"] for r in rows} == {"charades": 64, "activitynet": 100}
    assert results["ratios"] == speedups(rows)
    assert len(results["ratios"]) == 2 * 2 * 2 * 2  # workloads x batches x engine backends x (eager, fastest)
    assert {(b["workload"], b["concurrency"]) for b in results["batcher"]} == {
        (w, n) for w in QUICK_WORKLOADS for n in (1, 2)}
    shared = {(s["workload"], s["shared"]): s["videos"] for s in results["shared_video"]}
    assert shared == {(w, s): 2 if s else 8 for w in QUICK_WORKLOADS for s in (True, False)}
    assert (out / "results.md").read_text() == render_markdown(results)
    assert "CPU numbers, not GPU results" in result.stdout
    assert (out / "latency.png").exists() == _has_matplotlib()


def _has_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def test_a_failing_backend_is_skipped_with_its_reason_and_the_rest_measured(monkeypatch):
    monkeypatch.setitem(BACKENDS, "broken", "tests.bench.test_backends:broken_backend")
    opts = BenchOptions(workloads=["charades"], backends=["engine-broken", "reference-eager"], precisions=["fp32"],
                        batch_sizes=[1], device=torch.device("cpu"), repeats=1, warmup=0, sections=["rows"])
    results = Bench(opts).run()
    assert [(r["backend"], r["batch"]) for r in results["rows"]] == [("reference-eager", 1)]
    assert results["env"]["skipped"] == ["charades fp32 engine-broken: BackendError: no such hardware"]


def broken_backend(model, **options):
    raise BackendError("no such hardware")


def test_a_spent_time_budget_skips_every_group(tmp_path):
    result = run_cli("bench", "--quick", "--device", "cpu", "--workloads", "charades", "--time-budget", "0",
                     "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["rows"] == [] and "batcher" not in results
    # the rows group (every backend but reference-compile, timed in turn), the batcher/shared-video
    # group, reference-compile
    assert len(results["env"]["skipped"]) == 3
    assert all(s.endswith("time budget spent") for s in results["env"]["skipped"])
    assert (tmp_path / "results.md").exists() and not (tmp_path / "latency.png").exists()


def _row(backend, p50, batch=8, precision="bf16", workload="charades"):
    return {"workload": workload, "backend": backend, "precision": precision, "batch": batch, "n_clips": 64,
            "n_words": 12, "p50_ms": p50, "p99_ms": p50 * 1.5, "queries_per_s": batch / p50 * 1e3}


HAND_ROWS = [_row("reference-eager", 10.0), _row("reference-compile", 5.0), _row("engine-auto", 2.0),
             _row("engine-triton", 4.0), _row("reference-eager", 30.0, batch=64), _row("engine-auto", 3.0, batch=64),
             _row("engine-auto", 1.0, precision="fp32")]  # no fp32 baseline: no ratio


def test_speedups_divide_the_baseline_p50_by_the_engine_p50():
    got = {(s["backend"], s["batch"], s["baseline"]): s["speedup"] for s in speedups(HAND_ROWS)}
    assert got == {("engine-auto", 8, "reference-eager"): 5.0, ("engine-auto", 8, "reference-compile"): 2.5,
                   ("engine-triton", 8, "reference-eager"): 2.5, ("engine-triton", 8, "reference-compile"): 1.25,
                   ("engine-auto", 64, "reference-eager"): 10.0,
                   ("engine-auto", 8, "fastest"): 2.5, ("engine-triton", 8, "fastest"): 1.25,
                   ("engine-auto", 64, "fastest"): 10.0}  # over the fastest baseline of the same key
    assert {s["fastest"] for s in speedups(HAND_ROWS) if s["baseline"] == "fastest"} == {"reference-compile",
                                                                                          "reference-eager"}
    assert all(s["precision"] == "bf16" and s["workload"] == "charades" for s in speedups(HAND_ROWS))


def test_rows_table_renders_every_row_with_its_speedups():
    lines = rows_table(HAND_ROWS).splitlines()
    assert lines[0] == ("| workload | precision | batch | backend | clips | words | p50 ms | p99 ms | queries/s "
                        "| × eager | × compile | × onnxruntime-dynamic | × openvino-dynamic | × fastest |")
    assert len(lines) == 2 + len(HAND_ROWS)
    assert lines[2] == "| charades | bf16 | 8 | reference-eager | 64 | 12 | 10.000 | 15.000 | 800 | — | — | — | — | — |"
    assert lines[4] == ("| charades | bf16 | 8 | engine-auto | 64 | 12 | 2.000 | 3.000 | 4,000 | 5.00× | 2.50× | — | — "
                        "| 2.50× |")
    assert lines[7] == ("| charades | bf16 | 64 | engine-auto | 64 | 12 | 3.000 | 4.500 | 21,333 | 10.00× | — | — | — "
                        "| 10.00× |")
    assert lines[8].endswith("| 1.000 | 1.500 | 8,000 | — | — | — | — | — |")


def test_cpu_table_has_every_baseline_and_the_speedup_over_the_fastest():
    rows = [_row("reference-eager", 10.0, batch=1, precision="fp32"), _row("onnxruntime-dynamic", 4.0, batch=1,
                                                                        precision="fp32"),
            _row("openvino-dynamic", 5.0, batch=1, precision="fp32"), _row("engine-auto", 2.0, batch=1, precision="fp32"), _row("engine-auto-step", 1.5, batch=1, precision="fp32")]
    lines = cpu_table({"env": {"gpu": None, "cpu": "AMD EPYC, 2 cores"}, "rows": rows}).splitlines()
    assert "AMD EPYC, 2 cores" in lines[0]
    assert lines[2] == ("| workload | precision | batch | reference-eager p50 ms | reference-compile p50 ms "
                        "| onnxruntime-dynamic p50 ms | openvino-dynamic p50 ms "
                        "| engine ground() p50 ms | its step p50 ms | engine queries/s | × fastest other |")
    assert lines[4] == "| charades | fp32 | 1 | 10.000 | — | 4.000 | 5.000 | 2.000 | 1.500 | 500 | 2.00× |"


def test_headline_table_has_smallest_and_largest_batch_per_workload_and_precision():
    env = {"gpu": "NVIDIA H100 80GB HBM3", "cuda": "13.0", "torch": "2.11.0", "triton": "3.6.0", "date": "2026-11-26"}
    text = headline_table({"env": env, "rows": HAND_ROWS})
    assert text.startswith("Measured on NVIDIA H100 80GB HBM3 (CUDA 13.0), torch 2.11.0, triton 3.6.0, 2026-11-26.")
    lines = text.splitlines()[2:]
    assert lines[2] == "| charades | 64 | bf16 | 8 | 10.000 | 5.000 | 2.000 | 4,000 | 5.00× | 2.50× |"
    assert lines[3] == "| charades | 64 | bf16 | 64 | 30.000 | — | 3.000 | 21,333 | 10.00× | — |"
    assert lines[4] == "| charades | 64 | fp32 | 8 | — | — | 1.000 | 8,000 | — | — |"
    assert len(lines) == 5
    cpu = headline_table({"env": {"gpu": None, "cpu": "x86_64, 2 cores"}, "rows": HAND_ROWS})
    assert "CPU numbers, not GPU results" in cpu.splitlines()[0]


def test_plot_says_when_matplotlib_is_missing(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert plot_latency({"env": {}, "rows": HAND_ROWS}, tmp_path / "latency.png") is False
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert not (tmp_path / "latency.png").exists()


def test_charades_workloads_hold_the_annotated_queries_in_file_order():
    lines = [line for line in CHARADES_TEST.read_text(encoding="utf-8").splitlines() if line.strip()]
    lengths = [len(tokenize(line.split("##", 1)[1])) for line in lines]
    for name, clips in (("charades", 64), ("tacos", 256)):
        workload = load_workload(name)
        assert workload.n_clips == clips
        assert [r.vid for r in workload.records] == [line.split()[0] for line in lines]
        assert [len(r.words) for r in workload.records] == lengths
    assert min(lengths) >= 1 and max(lengths) <= 20
    assert Counter(lengths).most_common(1)[0][0] in range(5, 9)  # short queries: mostly 5-8 words


def test_activitynet_workload_holds_val_1_in_file_order():
    annotations = json.loads(ACTIVITYNET_VAL.read_text(encoding="utf-8"))
    sentences = [(vid, s) for vid, entry in annotations.items() for s in entry["sentences"]]
    workload = load_workload("activitynet")
    assert workload.n_clips == 100
    assert [(r.vid, r.sentence) for r in workload.records] == [(vid, s.strip()) for vid, s in sentences]
    head = workload.records[:300]
    assert [len(r.words) for r in head] == [len(tokenize(s)) for _, s in sentences[:300]]
    assert sum(len(r.words) for r in head) / len(head) > 10  # longer than Charades' queries


def test_inputs_share_videos_and_engine_rows_time_what_ground_runs():
    workload = load_workload("charades")
    records = workload.take(5)
    assert len({r.vid for r in records}) < 5  # Charades lists a video's queries together
    video, video_len, words, chars = model_inputs(workload, records, *workload.vocab(), torch.device("cpu"))
    assert video.shape == (5, 64, 1024) and video_len.tolist() == [64] * 5
    assert words.shape[1] == max(len(r.words) for r in records) and chars.shape[:2] == words.shape
    assert torch.equal(video[0], torch.from_numpy(workload.features(records[0].vid)))
    reqs = requests(workload, records)
    assert all((a.features is b.features) == (a.video_id == b.video_id) for a in reqs for b in reqs)

    model = random_model(workload)
    engine = GroundingEngine(model, *workload.vocab(), device="cpu", precision="fp32", backend="reference")
    step_outputs = [r for batch in engine_step(engine, reqs)() for r in batch]
    expected = engine_ground(engine, reqs)()
    assert len(step_outputs) == len(reqs) and all(r.error is None for r in expected)
    assert sorted((r.start_index, r.end_index, r.score) for r in step_outputs) == \
        sorted((r.start_index, r.end_index, r.score) for r in expected)


@pytest.mark.parametrize("args, message", [
    (("--workloads", "nope"), "--workloads: bad value(s) nope"),
    (("--batch-sizes", "1,0"), "--batch-sizes: bad value(s) 0"),
    (("--batch-sizes", "1,x"), "comma-separated list of integers"),
    (("--backends", "engine-fast"), "--backends: bad value(s) engine-fast"),
    (("--precisions", "fp16"), "--precisions: bad value(s) fp16"),
    (("--device", "cuda"), "no CUDA GPU"),
])
def test_bench_rejects_bad_options(args, message, tmp_path):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = run_cli("bench", "--quick", "--out", str(tmp_path), *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_gpu_check_script_is_valid_bash():
    script = REPO / "bench" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, check=False).returncode == 0
    if shutil.which("shellcheck"):
        checked = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stdout
