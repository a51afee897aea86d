"""Joining Ray for an offline run: start or join a cluster, what each worker of a pool asks for,
and the Ray Data settings the runs need (input order kept, Ray's own progress bars off)."""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

import ray

from ..errors import UsageError


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Within: a Ray session — the one this process already has, else a new local cluster (no
    `address`) or the cluster at `address` ("auto": the one `ray start` runs on this machine),
    shut down on leaving. Raises UsageError when it cannot be started or joined."""
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=address or "local", include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as err:
        raise UsageError(f"cannot start or join Ray at {address or 'a new local cluster'}: {err}") from None
    try:
        yield
    finally:
        ray.shutdown()


def keep_order() -> None:
    """Ray Data in this process: outputs in input order, no progress bars or logs of its own below
    errors (the command draws its own bar)."""
    from ray.data import DataContext

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    context.print_on_execution_start = False


def worker_resources(device: str, workers: int) -> tuple[dict, int | None]:
    """What each of `workers` actors asks Ray for: one GPU where the cluster has GPUs (and `device`
    allows), else an equal share of its CPUs; and the CPU threads its model should use (None on a GPU).
    Raises UsageError for more workers than the cluster has GPUs."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if device != "cpu" and gpus >= 1:
        if workers > gpus:
            raise UsageError(f"--workers {workers}: the Ray cluster has {gpus} GPU(s), one per worker")
        return {"num_gpus": 1}, None
    share = resources.get("CPU", 1) / workers
    return {"num_cpus": share}, max(1, int(share))


def enter_folder(folder: str) -> None:
    """Run in the driver's working folder when this node has it, so that relative paths mean on a
    worker what they mean to the command."""
    if os.path.isdir(folder):
        os.chdir(folder)
