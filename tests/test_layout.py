"""The layers of docs/architecture.md: every import statement in the package (module level or inside
a function) points down or sideways, never up, and no two packages import each other."""
from __future__ import annotations

import ast
from collections import defaultdict

import pytest

from tests.conftest import REPO

# Lower layers first; a module belongs to the longest prefix listed.
LAYERS: list[tuple[str, ...]] = [
    ("reference",),
    ("kernels",),
    ("engine.data", "engine.io"),
    ("engine",),  # the serving core: engine, requests, buckets, batcher, backends, CUDA graphs, parity
    ("engine.compile", "engine.train", "engine.serve", "engine.video", "engine.offline"),
    ("engine.cli",),
    ("bench",),
]
RANK = {prefix: rank for rank, prefixes in enumerate(LAYERS) for prefix in prefixes}
TOP_LEVEL = {"reference", "kernels", "engine", "bench"}


def owner(module: str) -> str | None:
    """The layer prefix a dotted module name belongs to (None for third-party modules)."""
    matches = [p for p in RANK if module == p or module.startswith(p + ".")]
    return max(matches, key=len) if matches else None


def module_name(path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path) -> set[str]:
    """Absolute names of every module an `import`/`from` statement in the file names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {m for m in found if m.split(".")[0] in TOP_LEVEL}


def package_modules():
    for top in sorted(TOP_LEVEL):
        yield from sorted((REPO / top).rglob("*.py"))


def edges() -> list[tuple[str, str, str]]:
    """(importing module, its layer, the imported layer) for every import between layers."""
    out = []
    for path in package_modules():
        if path.name.startswith("test_") or path.name == "conftest.py":
            continue  # bench's pytest-benchmark suite is a test suite, not the package
        source = owner(module_name(path))
        for target in imports_of(path):
            dest = owner(target)
            if dest is not None and dest != source:
                out.append((module_name(path), source, dest))
    return out


def test_every_import_points_down_or_sideways():
    upward = [f"{module} ({src}) imports {dest}" for module, src, dest in edges() if RANK[dest] > RANK[src]]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_two_packages_import_each_other():
    pairs = defaultdict(set)
    for module, src, dest in edges():
        pairs[(src, dest)].add(module)
    both_ways = [f"{a} <-> {b}" for (a, b) in pairs if (b, a) in pairs and a < b]
    assert not both_ways, both_ways


@pytest.mark.parametrize("module, expected", [("engine.engine", "engine"), ("engine.io.checkpoint", "engine.io"),
                                              ("engine.cli", "engine.cli"), ("reference.model", "reference"),
                                              ("numpy", None)])
def test_owner_picks_the_longest_prefix(module, expected):
    assert owner(module) == expected


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """A planted `from engine.cli import main` in a data module is caught."""
    fake = REPO / "engine" / "data" / "text.py"
    original = fake.read_text(encoding="utf-8")
    monkeypatch.setattr(type(fake), "read_text",
                        lambda self, encoding=None: original + "\nfrom ..cli import main\n" if self == fake
                        else open(self, encoding=encoding).read())
    assert ("engine.data.text", "engine.data", "engine.cli") in edges()


# One way through the house (issue 22): the path policy and the JSON request parser each have one caller.
ONE_CALLER = {
    "resolve_feature_path": {"engine.data.features", "engine.prepare"},  # its home, and the preparation stage
    "request_from_json": {"engine.wire"},  # the wire protocol reads every JSON request
}


def callers(function: str, modules=None) -> set[str]:
    """The package modules with a call of `function` (by name or as an attribute)."""
    found = set()
    for path in modules if modules is not None else package_modules():
        if path.name.startswith("test_") or path.name == "conftest.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name == function:
                    found.add(module_name(path))
                    break
    return found


@pytest.mark.parametrize("function", sorted(ONE_CALLER))
def test_the_path_policy_and_the_json_request_parser_are_called_from_one_module(function):
    extra = callers(function) - ONE_CALLER[function]
    assert not extra, f"{function} called outside {sorted(ONE_CALLER[function])}: {sorted(extra)}"


def test_the_caller_check_sees_a_second_caller(tmp_path, monkeypatch):
    """A planted call of the path policy in the CLI is caught."""
    planted = tmp_path / "planted.py"
    planted.write_text("from engine.data.features import resolve_feature_path\nresolve_feature_path('a.npy')\n")
    monkeypatch.setattr("tests.test_layout.REPO", tmp_path)
    assert callers("resolve_feature_path", [planted]) == {"planted"}
