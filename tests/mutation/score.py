"""Mutation scores from mutmut work folders (tests/mutation/run.py prints them at the end).

    .venv/bin/python tests/mutation/score.py FOLDER GLOB [--survivors]   # GLOB: mutant names, several
                                                                         # separated by spaces

Score = killed / mutants checked that a test calls. A timeout counts as killed (the mutant made a
test hang, which pytest-timeout fails); "no tests" mutants (no selected test calls their function)
and mutants not checked yet are counted apart; every other status counts as surviving.
"""
from __future__ import annotations

import fnmatch
import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

KILLED = {"killed", "timeout", "segfault"}
APART = {"no tests", "not checked"}


def statuses(folder: Path, glob: str) -> dict[str, str]:
    """Mutant name -> mutmut status, for the mutants in `folder` whose names match one of the
    space-separated globs of `glob`."""
    found = {}
    for meta in sorted((folder / "mutants").rglob("*.py.meta")):
        for mutant, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if any(fnmatch.fnmatch(mutant, g) for g in glob.split()):
                found[mutant] = status_by_exit_code[code]
    return found


def score_table(groups: dict[str, tuple[Path, str]], seconds: dict[str, float] | None = None) -> str:
    """One line per group: mutants, killed, survived, no tests, unchecked, score (and minutes)."""
    lines = [f"{'group':12} {'mutants':>7} {'killed':>6} {'survived':>8} {'no tests':>8} {'unchecked':>9} "
             f"{'score':>6} {'minutes':>7}"]
    for name, (folder, glob) in groups.items():
        c = Counter(statuses(folder, glob).values())
        killed = sum(c[s] for s in KILLED)
        checked = sum(c.values()) - sum(c[s] for s in APART)
        score = f"{killed / checked:.1%}" if checked else "-"
        minutes = f"{seconds[name] / 60:.1f}" if seconds and name in seconds else ""
        lines.append(f"{name:12} {sum(c.values()):7} {killed:6} {checked - killed:8} {c['no tests']:8} "
                     f"{c['not checked']:9} {score:>6} {minutes:>7}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    folder, glob = Path(argv[0]), argv[1]
    print(score_table({folder.name: (folder, glob)}))
    if "--survivors" in argv:
        for mutant, status in statuses(folder, glob).items():
            if status not in KILLED | APART:
                print(f"  {mutant} ({status})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
