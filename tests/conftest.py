"""Shared fixtures: golden files (the project's compact one, plus ../shared/golden when present)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # Triton kernels run on CPU tensors through its interpreter; it must be chosen before import.
    os.environ.setdefault("TRITON_INTERPRET", "1")

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"
COMPACT_GOLDEN = FIXTURES / "compact_charades_b3.npz"
SHARED = REPO.parent / "shared"  # the project's development folder: all goldens, real annotations
SHARED_GOLDEN_DIR = SHARED / "golden"


def golden_paths() -> list[Path]:
    """The compact golden always; every other golden in ../shared/golden when that folder exists."""
    shared = sorted(p for p in SHARED_GOLDEN_DIR.glob("*.npz") if p.name != COMPACT_GOLDEN.name)
    return [COMPACT_GOLDEN, *shared]


def pytest_configure(config):
    # compiled models (OpenVINO, TensorRT) go to one folder per test session, never the user's cache;
    # SEQPAN_TEST_CACHE_DIR keeps them across sessions instead (the mutation runs set it)
    if os.environ.get("SEQPAN_TEST_CACHE_DIR"):
        os.environ["SEQPAN_CACHE_DIR"] = os.environ["SEQPAN_TEST_CACHE_DIR"]
    else:
        os.environ["SEQPAN_CACHE_DIR"] = tempfile.mkdtemp(prefix="seqpan-test-cache-")
        config.add_cleanup(lambda: shutil.rmtree(os.environ.pop("SEQPAN_CACHE_DIR"), ignore_errors=True))
    config.addinivalue_line("markers", "cuda: needs an NVIDIA GPU (run by bench/gpu_check.sh)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds on CPU")


@pytest.fixture(params=golden_paths(), ids=lambda p: p.stem)
def golden_path(request) -> Path:
    return request.param
