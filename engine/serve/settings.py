"""What one server, or one Ray Serve replica, is started with."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection of the one-process server may take (`protocol.guarded_protocol` enforces it)."""
    max_connections: int = 512  # open at once; more are answered 503 and closed
    header_timeout: float = 10.0  # seconds from a connection's (or a request's) first byte to its last header
    body_timeout: float = 60.0  # seconds from the last header to the body's last byte
    max_header_bytes: int = 64 << 10  # request line and headers; more is answered 431
    shutdown_timeout: float = 10.0  # once stopping, the seconds a body still arriving is waited for


@dataclass(frozen=True)
class ServeSettings:
    """Engine, batcher and HTTP limits of one serving process (picklable: Ray ships it to replicas)."""
    checkpoint: str
    device: str = "auto"
    precision: str = "auto"
    backend: str = "auto"
    max_batch: int = 64  # requests per engine batch
    max_wait_ms: float = 0.0  # how long a ready request may wait for company (0: the worker takes what is ready)
    max_queue: int = 1024  # requests waiting in the micro-batcher; more are answered 429
    features_root: str | None = None  # feature paths are read below this folder only; None = no paths
    api_key: str | None = None  # when set, the /v1 routes need `Authorization: Bearer <api_key>`
    max_body_bytes: int = 16 << 20  # larger bodies are answered 413
    max_bodies_bytes: int = 64 << 20  # bytes of bodies held at once, all connections; past it, 503
    warmup: bool = True  # compile every shape of the engine's plan before /ready says 200
    threads: int | None = None  # CPU threads of the engine (torch's, and OpenVINO's); None = service.serving_threads()
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)  # the one-process server's guards
    videos: str | None = None  # the page's folder of video files (their names confined to it); needs i3d
    i3d: str | None = None  # I3D weights that the videos' features are extracted with
    preset: str = "charades"  # how they are extracted (the checkpoint's dataset)
    durations: str | None = None  # {video id: seconds} of the features under features_root, for the page
    max_videos: int = 1024  # videos registered with PUT /v1/videos/{id} kept at once; 0 = registering is off
    max_video_bytes: int = 256 << 20  # their features' bytes in all; past either bound the least recently used go
