"""Mutation testing of the engine core, span decoding, text, features, the server's guards, the disk
cache and its keys, atomic writes, checkpoints and the video path (docs/testing.md).

    .venv/bin/python tests/mutation/run.py              # every group of GROUPS
    .venv/bin/python tests/mutation/run.py text spans   # some of them

Needs mutmut (pip install -e '.[mutation]'). For each group it copies the project's files (tracked
and new, not ignored) into $MUTATION_DIR/<group> (default /tmp/seqpan-mutation), writes
tests/mutation/setup.cfg there with the group's module and tests, and runs `mutmut run` in that
folder: mutmut runs, for each mutant, the group's tests that call the mutated function, fastest
first, until one fails. The folders are kept (`cd $MUTATION_DIR/<group> && mutmut show NAME` shows a
mutant; a group's mutants are made afresh each run). Ends with the score per group
(tests/mutation/score.py) and the time each group took. MUTATION_WORKERS sets mutmut's workers
(default: one per core).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
from score import score_table  # noqa: E402

# group -> (files mutated, mutant names to run, the tests that cover it); several files or name globs
# are separated by spaces
GROUPS = {
    "buckets": ("engine/buckets.py", "engine.buckets.*", ["tests/engine/test_buckets.py"]),
    "spans": ("engine/spans.py", "engine.spans.*", ["tests/engine/test_spans.py", "tests/engine/test_engine_top_k.py"]),
    "decode_span": ("reference/localizer.py", "reference.localizer.x_decode_span__mutmut_*",
                    ["tests/reference/test_properties.py", "tests/engine/test_spans.py", "tests/kernels/test_span.py"]),
    "batcher": ("engine/batcher.py", "engine.batcher.*", ["tests/engine/test_batcher.py"]),
    "prepare": ("engine/prepare.py", "engine.prepare.*",
                ["tests/engine/test_prepare.py", "tests/engine/cli/test_ground.py"]),
    "wire": ("engine/wire.py", "engine.wire.*",
                 ["tests/engine/test_wire.py", "tests/engine/cli/test_ground.py",
                  "tests/engine/test_fuzz.py::test_fuzz_request_from_json_gives_a_request_or_a_request_error"]),
    "engine": ("engine/engine.py", "engine.engine.*", ["tests/engine/test_engine.py", "tests/engine/test_engine_top_k.py"]),
    "text": ("engine/data/text.py", "engine.data.text.*", ["tests/engine/data/test_text.py"]),
    "features": ("engine/data/features.py", "engine.data.features.*",
                 ["tests/engine/data/test_features.py", "tests/engine/data/test_fuzz_features.py",
                  "tests/engine/data/test_labels.py", "tests/engine/test_prepare.py"]),
    # the server's guards, the disk cache, files and video (issue 28)
    "guards": ("engine/serve/guards.py", "engine.serve.guards.*", ["tests/engine/serve/test_guards.py"]),
    "parsing": ("engine/serve/parsing.py", "engine.serve.parsing.*",
                ["tests/engine/serve/test_parsing.py", "tests/engine/serve/test_fuzz_parsing.py"]),
    "disk_cache": ("engine/compile/disk_cache.py", "engine.compile.disk_cache.*",
                   ["tests/engine/compile/test_disk_cache.py", "tests/engine/compile/test_trt.py"]),
    # only the key and shape logic of the backend: its other code is traced into compiled models
    "ov_keys": ("engine/compile/openvino_backend.py",
                " ".join(f"engine.compile.openvino_backend.x{name}__mutmut_*"
                         for name in ("ǁStageModelsǁkey", "_shape_of", "_runtime_precision", "_cpu_name")),
                ["tests/engine/compile/test_openvino_keys.py"]),
    "atomic": ("engine/io/atomic.py", "engine.io.atomic.*", ["tests/engine/io/test_atomic.py"]),
    "checkpoint": ("engine/io/checkpoint.py", "engine.io.checkpoint.*",
                   ["tests/engine/io/test_checkpoint_checks.py", "tests/engine/io/test_checkpoint.py"]),
    "windows": ("engine/video/windows.py", "engine.video.windows.*", ["tests/engine/video/test_windows.py"]),
    "video": ("engine/video/preprocess.py engine/video/weights.py engine/video/presets.py",
              "engine.video.preprocess.* engine.video.weights.* engine.video.presets.*",
              ["tests/engine/video/test_frame_prep.py", "tests/engine/video/test_i3d_weights.py",
               "tests/engine/video/test_i3d.py"]),
}
# code traced into the compiled models, whose mutants must compile their own (no shared model cache)
COMPILED_CODE = ("reference/", "engine/compile/")


def copy_project(dest: Path) -> None:
    """The project's tracked and new (not ignored) files, over whatever `dest` holds."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def group_config(module: str, tests: list[str]) -> str:
    """tests/mutation/setup.cfg with the group's modules to mutate and tests to run."""
    text = (HERE / "setup.cfg").read_text()
    extra = "only_mutate =\n" + "".join(f"    {m}\n" for m in module.split()) + \
        "pytest_add_cli_args_test_selection =\n" + "".join(f"    {t}\n" for t in tests)
    return text.replace("[mutmut]\n", "[mutmut]\n" + extra, 1)


def run_group(name: str, root: Path, workers: int) -> float:
    """Run one group's mutants in root/name; returns the seconds it took."""
    module, mutants, tests = GROUPS[name]
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    # a fresh start: mutmut reuses an earlier run's mutants and its record of which tests call which
    # function, so that a function added since would have "no tests"
    shutil.rmtree(folder / "mutants", ignore_errors=True)
    copy_project(folder)
    (folder / "setup.cfg").write_text(group_config(module, tests))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one thread a worker
    began = time.monotonic()
    with open(folder / "mutmut.log", "w") as log:
        if not any(m.startswith(COMPILED_CODE) for m in module.split()):
            # the compiled OpenVINO models are the same for every mutant: compile them once, before
            # mutmut's first run of the tests (so that no test nears the hang timeout), not per mutant
            env["SEQPAN_TEST_CACHE_DIR"] = str(folder / ".compiled-models")
            subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=folder,
                           env=env, stdout=log, stderr=subprocess.STDOUT)
        mutmut = Path(sys.executable).with_name("mutmut")
        subprocess.run([str(mutmut), "run", "--max-children", str(workers), *mutants.split()], cwd=folder, env=env,
                       stdout=log, stderr=subprocess.STDOUT)
    return time.monotonic() - began


def main(argv: list[str]) -> int:
    names = argv or list(GROUPS)
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        print(f"unknown groups {unknown}; choose from {list(GROUPS)}", file=sys.stderr)
        return 2
    root = Path(os.environ.get("MUTATION_DIR", "/tmp/seqpan-mutation"))
    workers = int(os.environ.get("MUTATION_WORKERS", os.cpu_count() or 2))
    seconds = {}
    for name in names:
        seconds[name] = run_group(name, root, workers)
        print(f"{name}: {seconds[name] / 60:.1f} min", flush=True)
    print(score_table({n: (root / n, GROUPS[n][1]) for n in names}, seconds))
    print(f"total {sum(seconds.values()) / 60:.1f} min with {workers} workers")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
