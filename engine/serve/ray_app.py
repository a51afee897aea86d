"""Scale-out: the same HTTP API served by N Ray Serve replicas, one engine (and micro-batcher) each.

Ray Serve's proxy listens on host:port and spreads requests over the replicas; every response
carries `X-SeqPAN-Replica`, and each replica's /metrics carries `seqpan_replica{replica=...}`.
On a cluster with GPUs each replica gets one GPU; otherwise the CPUs are shared among them.
"""
from __future__ import annotations

import dataclasses
import logging
import signal
import threading

import ray
from ray import serve

from ..errors import UsageError
from .app import build_app
from .metrics import ServiceMetrics
from .process import say, url
from .service import GroundingService
from .settings import ServeSettings

APP_NAME = "seqpan"


@serve.deployment
@serve.ingress()
class GroundingReplica:
    """One replica: loads and warms its engine before Ray routes anything to it."""

    def __init__(self, settings: ServeSettings):
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.service = GroundingService(settings, ServiceMetrics(replica=self.replica), owns_process=True)
        self.service.load()

    def __serve_build_asgi_app__(self):
        return build_app(self.service, replica=self.replica)


def replica_resources(settings: ServeSettings, replicas: int) -> dict:
    """One GPU per replica where the cluster has GPUs (and the device allows), else a share of its CPUs."""
    resources = ray.cluster_resources()
    if settings.device != "cpu" and resources.get("GPU", 0) >= 1:
        return {"num_gpus": 1}
    return {"num_cpus": min(1.0, resources.get("CPU", 1) / replicas)}


def run_on_ray(settings: ServeSettings, replicas: int, host: str, port: int, address: str | None) -> int:
    """Start (or join) Ray, deploy `replicas` replicas behind host:port, serve until SIGTERM or Ctrl-C,
    then let Ray Serve drain the replicas and shut down; returns the exit code 0."""
    try:
        ray.init(address=address or "local", include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as err:
        raise UsageError(f"cannot start or join Ray at {address or 'a new local cluster'}: {err}") from None
    stop = threading.Event()  # handlers set after ray.init, which installs its own
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    quiet = {"log_level": "WARNING"}
    try:
        serve.start(http_options={"host": host, "port": port}, logging_config=quiet)
        resources = replica_resources(settings, replicas)
        if replicas > 1 and settings.max_videos:  # each replica's store is its own: a video PUT to one is
            settings = dataclasses.replace(settings, max_videos=0)  # unknown to the others, so none is kept
            say("registered videos (PUT /v1/videos/ID) are off: each of several replicas would keep its own")
        if "num_cpus" in resources and settings.threads is None:  # a thread per CPU of its share, not per core
            settings = dataclasses.replace(settings, threads=max(1, int(resources["num_cpus"])))
        deployment = GroundingReplica.options(num_replicas=replicas, max_ongoing_requests=settings.max_queue,
                                              ray_actor_options=resources)
        say(f"starting {replicas} Ray Serve replica(s) ...")
        serve.run(deployment.bind(settings), name=APP_NAME, route_prefix="/", logging_config=quiet)
        say(f"listening on {url(host, port)} ({replicas} Ray Serve replica(s) ready)")
        while not stop.wait(0.5):
            pass
        say("stopping: Ray Serve drains the replicas, then exiting")
        serve.shutdown()
    finally:
        ray.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say("stopped")
    return 0
