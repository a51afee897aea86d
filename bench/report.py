"""Reports of a `seqpan bench` results JSON: speed-ups, markdown tables, the latency plot.

    python -m bench.report results.json             # the full markdown report
    python -m bench.report results.json --headline  # the README's headline table
    python -m bench.report results.json --cpu       # the README's CPU table
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

BASELINES = ("reference-eager", "reference-compile", "onnxruntime-dynamic", "openvino-dynamic")
FASTEST = "fastest"  # the speed-up over whichever baseline row of the same key is fastest
HEADLINE_BACKEND = "engine-auto"  # what `GroundingEngine(backend="auto")` users get
STEP_BACKEND = "engine-auto-step"  # its step alone

Column = tuple[str, str, Callable[[object], str]]  # key, title, format


def _ms(value) -> str:
    return f"{value:.3f}"


def _rate(value) -> str:
    return f"{value:,.0f}"


def _speedup(value) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _plain(value) -> str:
    return "—" if value is None else str(value)


def table(entries: Iterable[dict], columns: list[Column]) -> str:
    """A markdown table with one line per entry; a missing key shows as —."""
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for entry in entries:
        cells = [_plain(None) if entry.get(key) is None else fmt(entry[key]) for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _key(row: dict) -> tuple:
    return row["workload"], row["precision"], row["batch"]


def speedups(rows: list[dict]) -> list[dict]:
    """For every engine row and every baseline row of the same workload, precision and batch:
    speedup = baseline p50 / engine p50 (above 1: the engine is faster)."""
    base = {(_key(r), r["backend"]): r["p50_ms"] for r in rows if r["backend"] in BASELINES}
    fastest = {}
    for (key, name), p50 in base.items():
        if key not in fastest or p50 < fastest[key][1]:
            fastest[key] = (name, p50)
    return [{"workload": r["workload"], "precision": r["precision"], "batch": r["batch"], "backend": r["backend"],
             "baseline": name, "speedup": p50 / r["p50_ms"], **({"fastest": fastest_name} if name == FASTEST else {})}
            for r in rows if r["backend"].startswith("engine-")
            for name, fastest_name, p50 in [*((n, n, base[_key(r), n]) for n in BASELINES if (_key(r), n) in base),
                                            *([(FASTEST, *fastest[_key(r)])] if _key(r) in fastest else [])]]


def _with_speedups(rows: list[dict]) -> list[dict]:
    """Rows with `vs <baseline>` keys added from `speedups`."""
    found = {(_key(s), s["backend"], s["baseline"]): s["speedup"] for s in speedups(rows)}
    return [{**r, **{f"vs {name}": found.get((_key(r), r["backend"], name)) for name in (*BASELINES, FASTEST)}}
            for r in rows]


ROW_COLUMNS: list[Column] = [
    ("workload", "workload", str), ("precision", "precision", str), ("batch", "batch", str),
    ("backend", "backend", str), ("n_clips", "clips", str), ("n_words", "words", str),
    ("p50_ms", "p50 ms", _ms), ("p99_ms", "p99 ms", _ms), ("queries_per_s", "queries/s", _rate),
    *((f"vs {name}", f"× {name.removeprefix('reference-')}", _speedup) for name in (*BASELINES, FASTEST))]


def ordered(rows: list[dict]) -> list[dict]:
    """Rows by workload and precision (in order of first appearance) and batch; within one, the
    baselines first, then the other backends in order of first appearance."""
    def rank(key: str, first: tuple[str, ...] = ()) -> dict[str, int]:
        return {v: i for i, v in enumerate(dict.fromkeys([*first, *(r[key] for r in rows)]))}
    w, p, b = rank("workload"), rank("precision"), rank("backend", BASELINES)
    return sorted(rows, key=lambda r: (w[r["workload"]], p[r["precision"]], r["batch"], b[r["backend"]]))


def rows_table(rows: list[dict]) -> str:
    """Every row (`ordered`), with its speed-up over each baseline (engine rows only)."""
    return table(_with_speedups(ordered(rows)), ROW_COLUMNS)


def where_measured(env: dict) -> str:
    """One line naming the machine, labelled CPU when no GPU was used."""
    versions = f"torch {env.get('torch')}, triton {env.get('triton')}, {env.get('date')}"
    if env.get("gpu"):
        return f"Measured on {env['gpu']} (CUDA {env.get('cuda')}), {versions}."
    return f"Measured on CPU ({env.get('cpu')}), {versions}: CPU numbers, not GPU results."


def headline_table(results: dict) -> str:
    """The README's headline: per workload and precision, the smallest and largest batch, the
    baselines' p50, the engine's (engine-auto) p50 and throughput, and its speed-ups."""
    rows = _with_speedups(results["rows"])
    by_key = {(_key(r), r["backend"]): r for r in rows}
    lines = []
    for workload, precision in dict.fromkeys((r["workload"], r["precision"]) for r in rows):
        batches = sorted({r["batch"] for r in rows if (r["workload"], r["precision"]) == (workload, precision)})
        for batch in dict.fromkeys((batches[0], batches[-1])):
            key = (workload, precision, batch)
            engine = by_key.get((key, HEADLINE_BACKEND), {})
            line = {"workload": workload, "precision": precision, "batch": batch,
                    "n_clips": next(r["n_clips"] for r in rows if _key(r) == key),
                    "engine_p50": engine.get("p50_ms"), "engine_qps": engine.get("queries_per_s")}
            for name in BASELINES:
                line[name] = by_key.get((key, name), {}).get("p50_ms")
                line[f"vs {name}"] = engine.get(f"vs {name}")
            lines.append(line)
    columns: list[Column] = [("workload", "workload", str), ("n_clips", "clips", str), ("precision", "precision", str),
                             ("batch", "batch", str), ("reference-eager", "eager p50 ms", _ms),
                             ("reference-compile", "compile p50 ms", _ms), ("engine_p50", "engine p50 ms", _ms),
                             ("engine_qps", "engine queries/s", _rate), ("vs reference-eager", "× eager", _speedup),
                             ("vs reference-compile", "× compile", _speedup)]
    return where_measured(results["env"]) + "\n\n" + table(lines, columns)


def cpu_table(results: dict) -> str:
    """The README's CPU table: per workload, precision and batch, every baseline's p50, the engine's
    (engine-auto: ground() end to end) p50 and throughput, its step's p50, and the engine's speed-up
    over the fastest baseline."""
    rows = _with_speedups(results["rows"])
    by_key = {(_key(r), r["backend"]): r for r in rows}
    lines = []
    for key in sorted(dict.fromkeys(_key(r) for r in rows), key=lambda k: (k[0], k[1], k[2])):
        engine = by_key.get((key, HEADLINE_BACKEND), {})
        line = {"workload": key[0], "precision": key[1], "batch": key[2], "engine_p50": engine.get("p50_ms"),
                "engine_qps": engine.get("queries_per_s"), "vs fastest": engine.get(f"vs {FASTEST}"),
                "step_p50": by_key.get((key, STEP_BACKEND), {}).get("p50_ms")}
        line.update({name: by_key.get((key, name), {}).get("p50_ms") for name in BASELINES})
        lines.append(line)
    columns: list[Column] = [("workload", "workload", str), ("precision", "precision", str), ("batch", "batch", str),
                             *((name, f"{name} p50 ms", _ms) for name in BASELINES),
                             ("engine_p50", "engine ground() p50 ms", _ms), ("step_p50", "its step p50 ms", _ms),
                             ("engine_qps", "engine queries/s", _rate), ("vs fastest", "× fastest other", _speedup)]
    return where_measured(results["env"]) + "\n\n" + table(lines, columns)


BATCHER_COLUMNS: list[Column] = [
    ("workload", "workload", str), ("backend", "backend", str), ("precision", "precision", str),
    ("concurrency", "submitters", str), ("requests", "requests", str), ("batches", "batches", str),
    ("p50_ms", "p50 ms", _ms), ("p99_ms", "p99 ms", _ms), ("queries_per_s", "queries/s", _rate)]
SHARED_COLUMNS: list[Column] = [
    ("workload", "workload", str), ("backend", "backend", str), ("precision", "precision", str),
    ("batch", "queries", str), ("videos", "videos encoded", str), ("shared", "shared", str),
    ("p50_ms", "p50 ms", _ms), ("p99_ms", "p99 ms", _ms), ("queries_per_s", "queries/s", _rate)]


def render_markdown(results: dict) -> str:
    """The full report: where, how, every row, the batcher and shared-video sections, what was skipped."""
    env = results["env"]
    parts = ["# seqpan bench", where_measured(env), "\n".join(f"- {note}" for note in env.get("notes", [])),
             rows_table(results["rows"])]
    if results.get("batcher"):
        parts += ["## Micro-batcher under load (end to end: `MicroBatcher.submit` to result)",
                  table(results["batcher"], BATCHER_COLUMNS)]
    if results.get("shared_video"):
        parts += ["## Several queries per video (engine step, shared vs separate video encoding)",
                  table(results["shared_video"], SHARED_COLUMNS)]
    if env.get("skipped"):
        parts += ["## Skipped", "\n".join(f"- {s}" for s in env["skipped"])]
    return "\n\n".join(parts) + "\n"


def plot_latency(results: dict, path: str | Path) -> bool:
    """Log-log p50 latency vs batch size, one panel per (workload, precision), one line per backend.

    Returns False (and says so on stderr) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no latency plot (pip install matplotlib)", file=sys.stderr)
        return False
    rows = results["rows"]
    panels = list(dict.fromkeys((r["workload"], r["precision"]) for r in rows))
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.5 * max(len(panels), 1), 4), squeeze=False)
    for ax, (workload, precision) in zip(axes[0], panels):
        mine = [r for r in rows if (r["workload"], r["precision"]) == (workload, precision)]
        for backend in dict.fromkeys(r["backend"] for r in mine):
            points = sorted((r["batch"], r["p50_ms"]) for r in mine if r["backend"] == backend)
            ax.plot(*zip(*points), marker="o", label=backend)
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="p50 latency (ms)",
               title=f"{workload} ({mine[0]['n_clips']} clips), {precision}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(where_measured(results["env"]), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a results.json written by `seqpan bench`")
    parser.add_argument("--headline", action="store_true", help="only the README's headline table")
    parser.add_argument("--cpu", action="store_true", help="only the README's CPU table (every baseline, every batch)")
    args = parser.parse_args(argv)
    results = json.loads(Path(args.results).read_text())
    print(cpu_table(results) if args.cpu else headline_table(results) if args.headline else render_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
