"""What stands before grounding: the bearer token, readiness, the body-size limit, the bytes of bodies
held across all connections, and how a refusal is answered."""
from __future__ import annotations

import hmac

from starlette.requests import Request


class Refusal(Exception):
    """An HTTP request refused as a whole: status, one-line message, extra headers, metrics reason."""

    def __init__(self, status: int, message: str, reason: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers or {}


def check_bearer(request: Request, api_key: str | None) -> None:
    """Refuse (401) unless the first `Authorization` header is `Bearer <api_key>`: the scheme in any
    case, a space, the key's UTF-8 bytes (ASCII whitespace around them ignored), compared in
    constant time. No key: open."""
    if api_key is None:
        return
    header = first_header(request, b"authorization")
    if header is None or not _is_bearer(header, api_key.encode()):
        raise Refusal(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", "unauthorized",
                      {"WWW-Authenticate": "Bearer"})


def check_ready(ready: bool) -> None:
    """Refuse (503, Retry-After) while the model is still loading."""
    if not ready:
        raise Refusal(503, "the model is still loading; retry later", "not_ready", {"Retry-After": "1"})


def first_header(request: Request, name: bytes) -> bytes | None:
    """The first value of header `name` (lower case) in the bytes the client sent, or None.
    (Starlette's text of a header is its latin-1 decoding.)"""
    return next((value for key, value in request.headers.raw if key == name), None)


def _is_bearer(header: bytes, key: bytes) -> bool:
    scheme, _, token = header.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), key)


class BodyBudget:
    """The bytes of request bodies held at once, across all connections: a body is counted from
    its first byte (all of its declared Content-Length at once) until its answer is built."""

    def __init__(self, capacity: int):
        self.capacity, self.held = capacity, 0

    def claim(self) -> "BodyClaim":
        return BodyClaim(self)


class BodyClaim:
    """One request's share of a BodyBudget; `release()` gives it back (call it once, in a finally)."""

    def __init__(self, budget: BodyBudget):
        self.budget, self.size = budget, 0

    def grow(self, size: int) -> None:
        """Hold `size` bytes in all (more than now); Refusal (503, Retry-After) when the budget has no room."""
        extra = max(0, size - self.size)
        if self.budget.held + extra > self.budget.capacity:
            raise Refusal(503, "the server is receiving too many bodies at once; retry later", "busy",
                          {"Retry-After": "1"})
        self.budget.held += extra
        self.size += extra

    def release(self) -> None:
        self.budget.held -= self.size
        self.size = 0


async def read_body(request: Request, limit: int, claim: BodyClaim) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed `limit` bytes, and (503)
    as soon as `claim` cannot hold it."""
    too_large = Refusal(413, f"body larger than {limit} bytes", "too_large")
    declared = first_header(request, b"content-length")
    if declared is not None and declared.isdigit():  # ASCII digits only (str.isdigit takes '²', int() not)
        if int(declared) > limit:
            raise too_large
        claim.grow(int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        claim.grow(size)
        chunks.append(chunk)
    return b"".join(chunks)
