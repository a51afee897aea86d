"""What each worker of a pool asks Ray for: a GPU each where the cluster has them, else a share of the CPUs."""
from __future__ import annotations

import pytest

pytest.importorskip("ray")

from engine.errors import UsageError  # noqa: E402 (after the skip)
from engine.offline import cluster  # noqa: E402


@pytest.mark.parametrize("resources, device, workers, expected", [
    ({"CPU": 2.0}, "auto", 2, ({"num_cpus": 1.0}, 1)),
    ({"CPU": 16.0}, "auto", 3, ({"num_cpus": 16 / 3}, 5)),
    ({"CPU": 2.0}, "auto", 4, ({"num_cpus": 0.5}, 1)),
    ({"CPU": 16.0, "GPU": 2.0}, "auto", 2, ({"num_gpus": 1}, None)),
    ({"CPU": 16.0, "GPU": 2.0}, "cpu", 4, ({"num_cpus": 4.0}, 4)),
])
def test_worker_resources(monkeypatch, resources, device, workers, expected):
    monkeypatch.setattr(cluster.ray, "cluster_resources", lambda: resources)
    assert cluster.worker_resources(device, workers) == expected


def test_more_workers_than_gpus_is_a_usage_error(monkeypatch):
    monkeypatch.setattr(cluster.ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 2.0})
    with pytest.raises(UsageError, match="2 GPU"):
        cluster.worker_resources("auto", 3)
