"""`seqpan serve` as a child process on 127.0.0.1: start it, wait until it is ready, stop it with a
signal. Used by the serving tests and the load generator."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx

LISTENING = re.compile(r"seqpan serve: listening on (http://\S+)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers that cannot take port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`python -m engine.cli serve ARGS`; `start()` returns once it listens and /ready says 200.

    Its stderr is collected in `stderr` (a thread keeps the pipe drained). Use as a context
    manager: leaving it kills the process if it is still running."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None):
        self.args, self.env = args, {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self._lines: list[str] = []
        self._listening = threading.Event()

    @property
    def stderr(self) -> str:
        return "".join(self._lines)

    def start(self, timeout: float = 120.0) -> "ServerProcess":
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", *self.args], env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, errors="replace")
        threading.Thread(target=self._read_stderr, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"seqpan serve did not start (exit {self.proc.poll()}):\n{self.stderr[-4000:]}")
        while True:
            try:
                if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"seqpan serve never became ready (exit {self.proc.poll()}):\n{self.stderr[-4000:]}")
            time.sleep(0.1)

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self._lines.append(line)
            match = LISTENING.match(line)
            if match and self.url is None:
                self.url = match.group(1)
                self._listening.set()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send `sig` and wait for the exit status."""
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
