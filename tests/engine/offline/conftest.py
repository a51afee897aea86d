"""One local Ray session (2 CPUs) for the offline tests, started by the tests themselves."""
from __future__ import annotations

import logging
import os

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="session")
def ray_session():
    """Ray with 2 CPUs on this machine; its workers import this repository (and the tests' helpers)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("pyarrow", reason="Ray Data needs pyarrow (pip install -e '.[serve]')")
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()
