"""Mutation score per module from a mutmut work folder (run by tests/mutation/run.sh, in that folder).

    python tests/mutation/score.py [GLOB ...] [--survivors]

Score = killed / mutants checked that some test calls. A timeout counts as killed (the mutant made a
test hang, which pytest-timeout fails); "no tests" mutants (no selected test calls their function) and
mutants not checked yet are counted apart; every other status (survived, suspicious, ...) counts as
surviving.
"""
from __future__ import annotations

import fnmatch
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

from mutmut.stats import status_by_exit_code

KILLED = {"killed", "timeout", "segfault"}


def module_of(mutant: str) -> str:
    """`engine.engine.xǁGroundingEngineǁground__mutmut_3` -> `engine.engine`; decode_span apart."""
    module, _, _ = mutant.partition(".x")
    return f"{module}.decode_span" if "x_decode_span__" in mutant else module


def main(argv: list[str]) -> int:
    show = "--survivors" in argv
    globs = [a for a in argv if not a.startswith("--")] or ["*"]
    counts: dict[str, Counter] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        for mutant, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if not any(fnmatch.fnmatch(mutant, g) for g in globs):
                continue
            status = status_by_exit_code[code]
            counts[module_of(mutant)][status] += 1
            if status not in KILLED and status not in ("no tests", "not checked"):
                survivors[module_of(mutant)].append(f"{mutant} ({status})")
    print(f"{'module':32} {'mutants':>7} {'killed':>6} {'survived':>8} {'no tests':>8} {'unchecked':>9} {'score':>6}")
    for module, c in sorted(counts.items()):
        killed = sum(c[s] for s in KILLED)
        tested = sum(c.values()) - c["no tests"] - c["not checked"]
        score = f"{killed / tested:.1%}" if tested else "-"
        print(f"{module:32} {sum(c.values()):7} {killed:6} {tested - killed:8} {c['no tests']:8} {c['not checked']:9} "
              f"{score:>6}")
    if show:
        for module, names in sorted(survivors.items()):
            print(f"\n{module}:")
            print("\n".join(f"  {n}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
