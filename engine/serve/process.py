"""The one-process server: the app on uvicorn on a bound socket until SIGTERM or Ctrl-C, then drain.

On the first SIGTERM/SIGINT the server stops accepting connections, answers every request it has
received whole, gives a body still arriving at most `shutdown_timeout` seconds (then closes its
connection), runs the app's shutdown (which drains the micro-batcher), and `serve_http` returns, so
the process can exit 0. Connections are guarded by `protocol.GuardedProtocol` (connection cap,
header and body deadlines, header size). uvicorn itself would re-raise the signal afterwards (exit status -15);
a second Ctrl-C still forces an immediate stop.
"""
from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from typing import Callable

import uvicorn

from ..errors import UsageError
from .app import build_app
from .metrics import ServiceMetrics
from .protocol import guarded_protocol
from .service import GroundingService
from .settings import ConnectionLimits, ServeSettings

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# An idle connection stays open this long (Ray Serve's proxy: 90 s too). It must outlast the
# idle expiry of clients' pools (httpx: 5 s, uvicorn's own default): otherwise a client reuses a
# connection just as the server closes it, and that request fails (seen under load at 64 clients).
KEEP_ALIVE_S = 90


def say(message: str) -> None:
    """One line of the server's own news on stderr."""
    print(f"seqpan serve: {message}", file=sys.stderr, flush=True)


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0 picks a free one); UsageError if it cannot bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except (OSError, OverflowError) as err:
        raise UsageError(f"cannot listen on {host}:{port}: {err}") from None


class _DrainingServer(uvicorn.Server):
    """uvicorn's server that does not re-raise the stop signal, and can be stopped by a watcher."""

    def __init__(self, config: uvicorn.Config, watch: Callable[[], bool] | None):
        super().__init__(config)
        self.watch = watch

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig, frame) -> None:
        if not self.should_exit:
            say("stopping: answering accepted requests, then exiting")
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.watch is not None and self.watch():
            self.should_exit = True
        return await super().on_tick(counter)


def serve_http(app, sock: socket.socket, watch: Callable[[], bool] | None = None,
               limits: ConnectionLimits = ConnectionLimits()) -> None:
    """Serve `app` on `sock`, its connections held to `limits`, until a stop signal (or until
    `watch()`, called ten times a second, returns True), then finish the accepted requests and the
    app's shutdown, and return."""
    config = uvicorn.Config(app, http=guarded_protocol(limits), log_level="warning", access_log=False,
                            lifespan="on", timeout_keep_alive=KEEP_ALIVE_S, timeout_graceful_shutdown=None)
    _DrainingServer(config, watch).run(sockets=[sock])


def run_one_process(settings: ServeSettings, host: str, port: int) -> int:
    """The server in this process, until SIGTERM or Ctrl-C; returns 0 once every accepted request is
    answered. A model that fails to load stops the server and its exception is raised."""
    service = GroundingService(settings, ServiceMetrics(), owns_process=True)
    sock = listen_socket(host, port)
    say(f"listening on {url(host, sock.getsockname()[1])} (loading {settings.checkpoint}; /ready says when done)")
    announced = False

    def announce_ready_or_stop() -> bool:
        nonlocal announced
        if service.ready and not announced:
            announced = True
            say(f"ready ({service.engine.description})")
        return service.failure is not None

    serve_http(build_app(service), sock, announce_ready_or_stop, settings.connections)
    if service.failure is not None:
        raise service.failure
    say("stopped")
    return 0
