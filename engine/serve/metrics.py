"""The service's Prometheus metrics, in a registry of its own (one per server or replica)."""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..lru import LRU

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServiceMetrics:
    """Counters, histograms and gauges of one serving process; `render()` is the /metrics body."""

    def __init__(self, replica: str | None = None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter("seqpan_http_requests", "HTTP requests answered, by route and status code",
                                     ["route", "code"], registry=r)
        self.results = Counter("seqpan_results", "grounding results sent, by outcome (ok or error)",
                               ["outcome"], registry=r)
        self.rejections = Counter("seqpan_rejections", "POST /v1/ground refused before grounding, by reason",
                                  ["reason"], registry=r)
        self.latency = Histogram("seqpan_request_latency_seconds", "time to answer one POST /v1/ground",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("seqpan_batch_size", "requests in each engine batch the micro-batcher runs",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("seqpan_queue_depth", "grounding requests in the micro-batcher, waiting or running",
                                 registry=r)
        self.in_progress = Gauge("seqpan_ground_in_progress", "POST /v1/ground requests accepted and not yet answered",
                                 registry=r)
        self.ready = Gauge("seqpan_ready", "1 once the model is loaded and warm, else 0", registry=r)
        self.registered_videos = Gauge("seqpan_registered_videos", "videos registered with PUT /v1/videos/{id} "
                                       "and kept", registry=r)
        self.registered_video_bytes = Gauge("seqpan_registered_video_bytes", "bytes of the registered videos' "
                                            "features", registry=r)
        if replica is not None:
            Gauge("seqpan_replica", "the replica this process serves as (value 1)", ["replica"],
                  registry=r).labels(replica).set(1)

    def watch_caches(self, caches: dict[str, LRU]) -> None:
        """Report the engine's caches (by name): seqpan_cache_hits_total, seqpan_cache_misses_total and
        seqpan_cache_entries, labelled `cache`."""
        self.registry.register(CacheCollector(caches))

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class CacheCollector:
    """Hits, misses and entries of named LRU caches, read when /metrics is scraped."""

    def __init__(self, caches: dict[str, LRU]):
        self.caches = caches

    def collect(self):
        hits = CounterMetricFamily("seqpan_cache_hits", "lookups an engine cache answered, by cache", labels=["cache"])
        misses = CounterMetricFamily("seqpan_cache_misses", "lookups an engine cache could not answer, by cache",
                                     labels=["cache"])
        entries = GaugeMetricFamily("seqpan_cache_entries", "entries an engine cache holds, by cache", labels=["cache"])
        for name, cache in self.caches.items():
            hits.add_metric([name], cache.hits)
            misses.add_metric([name], cache.misses)
            entries.add_metric([name], len(cache))
        yield from (hits, misses, entries)
