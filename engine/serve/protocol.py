"""uvicorn's HTTP protocol (httptools) with the guards a public server needs against slow or
greedy clients: a cap on open connections, a deadline for a request's headers and one for its
body, a limit on the bytes of headers, and a bound on how long a body may still arrive once the
server is stopping.

uvicorn itself closes an idle connection only after a response (keep-alive), never one that
trickles its headers or body, and reads headers of any size. Each guard here acts on the
connection: a refusal before the app runs is written here (431, 408, 503, then the connection is
closed); a body that misses its deadline closes the connection, and the app sees its client gone
(marked in the request's scope under BODY_TIMED_OUT)."""
from __future__ import annotations

import asyncio
import http
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .settings import ConnectionLimits

log = logging.getLogger("seqpan.serve")
BODY_TIMED_OUT = "seqpan.body_timed_out"  # scope key: the connection was closed because its body was late


def guarded_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """The protocol class to give `uvicorn.Config(http=...)`, enforcing `limits`."""
    return type("GuardedHttpToolsProtocol", (GuardedProtocol,), {"limits": limits})


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with the guards of `limits` (a class attribute: see `guarded_protocol`)."""

    limits: ConnectionLimits = ConnectionLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes = self._raw_header_bytes = 0
        self._awaiting_headers, self._receiving_body = True, False
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "too many open connections; retry later")
            return
        self._arm(self.limits.header_timeout, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        counting = self._awaiting_headers
        super().data_received(data)
        if counting and self._awaiting_headers and not self.transport.is_closing():
            self._raw_header_bytes += len(data)  # the headers are not complete yet (httptools holds them)
            if self._raw_header_bytes > self.limits.max_header_bytes:
                self._refuse(431, f"request headers larger than {self.limits.max_header_bytes} bytes")

    def send_400_response(self, msg: str) -> None:
        if not self.transport.is_closing():  # closed already when the parse stopped at a refusal of ours
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = self._raw_header_bytes = 0
        self._awaiting_headers = True
        if self._deadline is None:  # a new connection's first request keeps the deadline set at connect
            self._arm(self.limits.header_timeout, self._headers_late)

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.limits.max_header_bytes:
            self._refuse(431, f"request headers larger than {self.limits.max_header_bytes} bytes")
            raise _Refused()  # stops the parse

    def on_headers_complete(self) -> None:
        self._awaiting_headers, self._receiving_body = False, True
        pipelined = self.cycle is not None and not self.cycle.response_complete
        super().on_headers_complete()
        if pipelined:  # uvicorn reads its body only once the answer before it is sent: see on_response_complete
            self._disarm()
        else:
            self._arm(self.limits.body_timeout, self._body_late)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._receiving_body and self._deadline is None and not self.transport.is_closing():
            self._arm(self.limits.body_timeout, self._body_late)  # a pipelined request's body, read from now

    def on_message_complete(self) -> None:
        self._receiving_body = False
        self._disarm()
        super().on_message_complete()

    def shutdown(self) -> None:
        """Stopping: idle connections close now (uvicorn); one whose body is still arriving gets
        at most `shutdown_timeout` more seconds for it."""
        super().shutdown()
        if self._receiving_body and not self.transport.is_closing():
            left = self._deadline.when() - self.loop.time() if self._deadline is not None else self.limits.body_timeout
            self._arm(min(left, self.limits.shutdown_timeout), self._body_late)

    def _arm(self, seconds: float, callback) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        self._refuse(408, f"request headers not received within {self.limits.header_timeout:g} s")

    def _body_late(self) -> None:
        self._deadline = None
        if self.cycle is not None and not self.transport.is_closing():
            self.cycle.scope[BODY_TIMED_OUT] = True  # type: ignore[literal-required]
            log.warning("closed a connection from %s: its request body did not arrive in time", _peer(self.client))
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` with `message` (when no response is under way here) and close the connection."""
        self._disarm()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            body = f'{{"error": "{message}"}}'.encode()
            head = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\nconnection: close\r\n")
            if status == 503:
                head += "retry-after: 1\r\n"
            self.transport.write(head.encode() + b"\r\n" + body)
        self.transport.close()


class _Refused(Exception):
    """Raised in a parser callback after a refusal was written: httptools stops parsing there."""


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"
