"""HTTP range requests on a file (RFC 9110 §14): which bytes a `Range` header asks for, and a
response that streams them from an open file."""
from __future__ import annotations

import mimetypes
import re
from typing import BinaryIO

from starlette.responses import Response, StreamingResponse

CHUNK = 1 << 16
_ONE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(Exception):
    """A range that starts past the end of the file (answered 416)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The bytes [first, last] that a `Range` header asks of a file of `size` bytes, or None to send the
    whole file (no header, another unit, several ranges, a malformed one: a server may ignore those)."""
    match = _ONE_RANGE.fullmatch(header.strip()) if header else None
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        if int(last) == 0 or size == 0:
            raise RangeNotSatisfiable()
        return max(0, size - int(last)), size - 1
    if last != "" and int(last) < int(first):  # invalid: ignored
        return None
    if int(first) >= size:
        raise RangeNotSatisfiable()
    return int(first), size - 1 if last == "" else min(int(last), size - 1)


def file_response(f: BinaryIO, name: str, size: int, range_header: str | None,
                  headers: dict[str, str] | None = None, head: bool = False) -> Response:
    """Streams the open file `f` (closed when done): 200 whole, 206 for a satisfiable range, 416 for
    one past the end; the media type guessed from `name`; `head`: the headers alone."""
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    headers = {"Accept-Ranges": "bytes", **(headers or {})}
    try:
        wanted = byte_range(range_header, size)
    except RangeNotSatisfiable:
        f.close()
        return Response(b"", 416, {**headers, "Content-Range": f"bytes */{size}"})
    first, last = wanted if wanted is not None else (0, size - 1)
    if wanted is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(last - first + 1)
    status = 206 if wanted is not None else 200
    if head:
        f.close()
        return Response(b"", status, headers, media_type)

    def chunks():
        with f:
            f.seek(first)
            left = last - first + 1
            while left > 0:
                data = f.read(min(CHUNK, left))
                if not data:  # the file shrank while it was sent
                    return
                left -= len(data)
                yield data

    return StreamingResponse(chunks(), status, headers, media_type)
