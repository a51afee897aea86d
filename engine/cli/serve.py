"""`seqpan serve`: the engine behind an HTTP API (health, readiness, Prometheus metrics), on one
process or scaled out over Ray Serve replicas. The server lives in `engine/serve/`."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..data.dataset import read_durations
from ..engine import PRECISIONS
from ..errors import UsageError
from ..serve.settings import ConnectionLimits, ServeSettings
from ..video.presets import PRESETS
from .extract_features import load_video_package
from .options import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve grounding over HTTP, on one process or on Ray Serve replicas",
                       description=__doc__)
    p.add_argument("--checkpoint", required=True, help="native .safetensors checkpoint")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default %(default)s; 0 picks a free one)")
    p.add_argument("--features-root", help="folder that request feature paths are read from (and confined to); "
                                           "without it, requests must carry their features as lists")
    p.add_argument("--durations", help="the page's durations of those features: JSON {video id: seconds} "
                                       "(a feature file's id is its name without .npy)")
    p.add_argument("--videos", help="the page's folder of video files (their names confined to it); needs --i3d")
    p.add_argument("--i3d", help="with --videos: I3D weights the videos' features are extracted with on first use")
    p.add_argument("--preset", default="charades", choices=PRESETS,
                   help="with --videos: the checkpoint's dataset, how its features were extracted (default %(default)s)")
    p.add_argument("--max-batch", type=positive_int, default=64, help="requests per engine batch (default %(default)s)")
    p.add_argument("--max-wait-ms", type=float, default=0.0,
                   help="how long a ready request may wait for company before its batch runs; at 0 the "
                        "batcher takes what is ready whenever the model is free (default %(default)s)")
    p.add_argument("--max-queue", type=positive_int, default=1024,
                   help="requests waiting per process; more are answered 429 (default %(default)s)")
    p.add_argument("--max-body-mb", type=float, default=16.0,
                   help="larger request bodies are answered 413 (default %(default)s)")
    p.add_argument("--max-bodies-mb", type=float, default=64.0,
                   help="bytes of request bodies held at once, all connections together; past it a body is "
                        "answered 503 with Retry-After (default %(default)s; at least --max-body-mb)")
    p.add_argument("--max-videos", type=int, default=1024,
                   help="videos registered with PUT /v1/videos/ID kept at once; past it (or --max-video-store-mb) "
                        "the least recently used are dropped; 0 turns registering off (default %(default)s)")
    p.add_argument("--max-video-store-mb", type=float, default=256.0,
                   help="megabytes of registered videos' features kept at once (default %(default)s)")
    p.add_argument("--max-connections", type=positive_int, default=512,
                   help="open connections; more are answered 503 and closed (default %(default)s; keep it "
                        "below the open-file limit, ulimit -n)")
    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a request's headers may take to arrive; then 408 and closed (default %(default)s)")
    p.add_argument("--body-timeout", type=float, default=60.0,
                   help="seconds a request's body may take after its headers; then the connection is closed "
                        "(default %(default)s)")
    p.add_argument("--max-header-kb", type=positive_int, default=64,
                   help="larger request headers are answered 431 (default %(default)s)")
    p.add_argument("--shutdown-timeout", type=float, default=10.0,
                   help="once stopping, seconds a body still arriving is waited for before its connection is "
                        "closed; requests received whole are always answered (default %(default)s)")
    p.add_argument("--api-key-env", metavar="NAME",
                   help="environment variable holding the API key that POST /v1/ground requires as a Bearer token")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=positive_int, help="CPU threads of the engine, torch's and the openvino "
                                                        "backend's (default on CPU: one fewer than the cores the "
                                                        "process may use, at least 1; the host work needs one)")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="report ready without first compiling every shape of the engine's plan")
    p.add_argument("--ray", action="store_true", help="serve from a Ray Serve deployment (needs ray[serve])")
    p.add_argument("--replicas", type=positive_int, help="with --ray: engine replicas (default 1; one GPU each "
                                                         "where the cluster has GPUs)")
    p.add_argument("--ray-address", help="with --ray: an existing cluster (default: start a local Ray)")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """Check the options and turn them into ServeSettings; UsageError for anything wrong."""
    if not Path(args.checkpoint).is_file():
        raise UsageError(f"checkpoint not found: {args.checkpoint}")
    if args.features_root is not None and not Path(args.features_root).is_dir():
        raise UsageError(f"--features-root is not a folder: {args.features_root}")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    if not 0 <= args.max_wait_ms <= 60_000:
        raise UsageError(f"--max-wait-ms must be in 0..60000, got {args.max_wait_ms}")
    if not 0 < args.max_body_mb <= 4096:
        raise UsageError(f"--max-body-mb must be in (0, 4096], got {args.max_body_mb}")
    check_page_args(args)
    if not 0 <= args.max_videos <= 10**6:
        raise UsageError(f"--max-videos must be in 0..1000000, got {args.max_videos}")
    if not 0 < args.max_video_store_mb <= 1 << 20:
        raise UsageError(f"--max-video-store-mb must be in (0, 1048576], got {args.max_video_store_mb}")
    if not args.ray and (args.replicas is not None or args.ray_address is not None):
        raise UsageError("--replicas and --ray-address need --ray")
    for flag, seconds in (("--header-timeout", args.header_timeout), ("--body-timeout", args.body_timeout),
                          ("--shutdown-timeout", args.shutdown_timeout)):
        if not 0 < seconds <= 86_400:
            raise UsageError(f"{flag} must be in (0, 86400] seconds, got {seconds}")
    if not args.max_body_mb <= args.max_bodies_mb <= 65_536:
        raise UsageError(f"--max-bodies-mb must be in [--max-body-mb, 65536], got {args.max_bodies_mb}")
    connections = ConnectionLimits(args.max_connections, args.header_timeout, args.body_timeout,
                                   args.max_header_kb << 10, args.shutdown_timeout)
    return ServeSettings(args.checkpoint, args.device, args.precision, args.backend, args.max_batch, args.max_wait_ms,
                         args.max_queue, args.features_root, api_key_from_env(args.api_key_env),
                         int(args.max_body_mb * (1 << 20)), int(args.max_bodies_mb * (1 << 20)), args.warmup,
                         args.threads, connections, args.videos, args.i3d, args.preset,
                         args.durations, args.max_videos, int(args.max_video_store_mb * (1 << 20)))


def check_page_args(args: argparse.Namespace) -> None:
    """The page's options: --videos with --i3d (and the video packages), --durations readable."""
    if (args.videos is None) != (args.i3d is None):
        raise UsageError("--videos and --i3d go together: a folder of videos and the I3D weights to extract with")
    if args.videos is not None:
        if not Path(args.videos).is_dir():
            raise UsageError(f"--videos is not a folder: {args.videos}")
        if not Path(args.i3d).is_file():
            raise UsageError(f"--i3d weights not found: {args.i3d}")
        load_video_package()
        from ..video.weights import load_i3d

        load_i3d(args.i3d)  # weights that do not load are said now, not at the first video
    if args.durations is not None:
        if args.features_root is None:
            raise UsageError("--durations needs --features-root (it gives the durations of those features)")
        read_durations(args.durations)


def api_key_from_env(name: str | None) -> str | None:
    """The API key held by environment variable `name` (None: no key): surrounding whitespace is
    stripped (with a note), a key that is empty, not UTF-8 or not printable text is a UsageError."""
    if name is None:
        return None
    raw = os.environb.get(os.fsencode(name), b"") if os.supports_bytes_environ else os.environ.get(name, "").encode()
    try:
        key = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--api-key-env {name}: the key is not UTF-8 text") from None
    if not key.strip():
        raise UsageError(f"--api-key-env {name}: that environment variable is not set or empty")
    if key.strip() != key:
        key = key.strip()
        print(f"seqpan serve: note: the key in {name} had whitespace around it (a newline from a key file?); "
              "it was stripped", file=sys.stderr)
    if not key.isprintable():
        raise UsageError(f"--api-key-env {name}: the key holds characters that are not printable text")
    return key


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.ray:
        from ..serve.ray_app import run_on_ray

        return run_on_ray(settings, args.replicas or 1, args.host, args.port, args.ray_address)
    from ..serve.process import run_one_process

    return run_one_process(settings, args.host, args.port)
