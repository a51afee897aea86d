"""A picture of one grounded query: start and end probabilities over time, the answer and the top-k
spans shaded (matplotlib, an optional package: `pip install -e '.[bench]'`)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from reference.errors import SeqPANError

from .atomic import write_atomically

PLOT_FORMATS = ("png", "svg", "pdf")


class PlotError(SeqPANError):
    """A plot that cannot be drawn: matplotlib missing, or an output format it does not write here."""


def plot_format(path: str | os.PathLike) -> str:
    """The format of `path` by its suffix (png, svg or pdf), checked with matplotlib's presence before any work."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in PLOT_FORMATS:
        raise PlotError(f"--plot {path}: give a .png, .svg or .pdf file")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotError("--plot needs matplotlib: pip install -e '.[bench]' (or pip install matplotlib)") from None
    return fmt


def plot_moment(path: str | os.PathLike, p_start: np.ndarray, p_end: np.ndarray, duration: float, query: str,
                moments: list[dict]) -> None:
    """Write the probabilities of each clip (clip i spans [i, i+1]·duration/clips) as steps over time,
    with `moments` ({start, end, score}, the answer first) shaded, darker for better ones; atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    edges = np.arange(len(p_start) + 1) * duration / len(p_start)
    figure = Figure(figsize=(9, 3.6), layout="constrained")
    axes = figure.add_subplot()
    for rank, moment in reversed(list(enumerate(moments))):
        best = rank == 0
        axes.axvspan(moment["start"], moment["end"], color="tab:green" if best else "tab:gray",
                     alpha=0.35 if best else 0.12, lw=0,
                     label=f"answer {moment['start']:.2f}-{moment['end']:.2f} s" if best else
                     (f"top-{len(moments)} spans" if rank == 1 else None))
    axes.stairs(p_start, edges, label="p(start)", color="tab:blue", lw=1.8)
    axes.stairs(p_end, edges, label="p(end)", color="tab:orange", lw=1.8)
    axes.set(xlim=(0, duration), ylim=(0, None), xlabel="time (s)", ylabel="probability")
    axes.set_title(f"“{query if len(query) <= 80 else query[:77] + '…'}”", fontsize=11)
    axes.legend(loc="upper right", fontsize=9)
    fmt = plot_format(path)
    write_atomically(path, lambda tmp: figure.savefig(tmp, format=fmt, dpi=120))
