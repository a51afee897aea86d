"""What stands before grounding: the bearer token and the body-size limit, and how a refusal is answered."""
from __future__ import annotations

import hmac

from starlette.requests import Request


class Refusal(Exception):
    """An HTTP request refused as a whole: status, one-line message, extra headers, metrics reason."""

    def __init__(self, status: int, message: str, reason: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers or {}


def check_bearer(request: Request, api_key: str | None) -> None:
    """Refuse (401) unless `Authorization: Bearer <api_key>`; compared in constant time. No key: open."""
    if api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise Refusal(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", "unauthorized",
                      {"WWW-Authenticate": "Bearer"})


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed `limit` bytes."""
    too_large = Refusal(413, f"body larger than {limit} bytes", "too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
