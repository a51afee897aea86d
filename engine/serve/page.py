"""The web page of `seqpan serve` and the API routes it needs beside POST /v1/ground.

    GET  /                      the page (static HTML, JS and CSS shipped in engine/serve/static/)
    GET  /static/NAME           its script and style sheet (only the files shipped there)
    GET  /v1/videos             what can be grounded: the features under --features-root, the videos of --videos
    GET  /v1/videos/file?name=  a video's bytes, with HTTP range requests
    POST /v1/videos/extract     {"video": NAME}: start extracting a video's features; its status and progress

A `video` entry of POST /v1/ground names a video of --videos: `Page.resolve_videos` turns it into
its features (extracted on first use) before the engine sees it. Every name is confined to its
folder: a name that does not resolve (symlinks followed) to a file inside it gets one message.
With an API key, every /v1 route needs it as the API does; a video's `url` in the listing carries a
token (an HMAC of its name under the key), since a browser's player cannot send headers.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from reference.errors import SeqPANError

from ..data.dataset import read_durations
from ..data.features import open_feature_file
from ..errors import RequestError
from ..prepare import with_video_features
from ..wire import parse_json
from ..requests import GroundingRequest, GroundingResult
from .guards import BodyBudget, Refusal, check_bearer, read_body
from .library import VIDEO_REFUSED, VideoLibrary, VideoRefused, feature_listing
from .ranges import file_response
from .settings import ServeSettings

STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8"}
# the page loads nothing from elsewhere and runs no inline script; videos may come from blob: URLs
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; media-src 'self' blob:; object-src 'none'; "
                                               "frame-ancestors 'none'; base-uri 'none'",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
MAX_EXTRACT_BODY = 64 << 10


def json_response(status: int, payload, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload, allow_nan=False), status, {**SECURITY_HEADERS, **(headers or {})},
                    "application/json")


class Page:
    """The page's routes (`routes`) and the hook that serves `video` entries of POST /v1/ground."""

    def __init__(self, settings: ServeSettings, budget: BodyBudget):
        self.settings, self.budget = settings, budget  # the app's budget of bodies held at once
        self.durations = read_durations(settings.durations) if settings.durations is not None else {}
        self.library = VideoLibrary(settings.videos, settings.i3d, settings.preset, settings.device) \
            if settings.videos is not None else None
        self.static = {p.name: (p.read_bytes(), STATIC_TYPES[p.suffix]) for p in STATIC.iterdir()
                       if p.suffix in STATIC_TYPES}
        self.routes = [Route("/", self.index, methods=["GET"]), Route("/static/{name}", self.asset, methods=["GET"]),
                       Route("/v1/videos", self.listing, methods=["GET"]),
                       Route("/v1/videos/file", self.video_file, methods=["GET"]),
                       Route("/v1/videos/extract", self.extract, methods=["POST"])]

    async def resolve_videos(self, entries: Sequence[GroundingRequest | GroundingResult]
                             ) -> list[GroundingRequest | GroundingResult]:
        """Each request naming a `video` of the videos folder with that video's features (and, unless
        it gives one, duration); one that cannot be served becomes its error. Without a videos folder
        the entries are left to the engine, which refuses video requests."""
        if self.library is None:
            return list(entries)
        return [await self._with_features(e) if isinstance(e, GroundingRequest) and e.video is not None else e
                for e in entries]

    async def _with_features(self, request: GroundingRequest) -> GroundingRequest | GroundingResult:
        try:
            job = await asyncio.to_thread(self.library.start, str(request.video))
        except VideoRefused as err:
            return GroundingResult(request.id, error=str(err))
        await asyncio.wrap_future(job.finished)  # no thread waits for an extraction
        if job.error is not None:
            return GroundingResult(request.id, error=job.error)
        return with_video_features(request, job.features, job.duration)

    # -- routes ------------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        return await self.asset(request, "index.html")

    async def asset(self, request: Request, name: str | None = None) -> Response:
        found = self.static.get(name or request.path_params["name"])
        if found is None:
            return json_response(404, {"error": "not found"})
        body, media_type = found
        return Response(body, 200, {**SECURITY_HEADERS, "Cache-Control": "no-cache"}, media_type)

    async def listing(self, request: Request) -> Response:
        try:
            check_bearer(request, self.settings.api_key)
        except Refusal as refusal:
            return json_response(refusal.status, {"error": refusal.message}, refusal.headers)
        features, features_cut = await asyncio.to_thread(feature_listing, self.settings.features_root, self.durations)
        videos, videos_cut = await asyncio.to_thread(self.library.listing) if self.library else ([], False)
        for video in videos:
            video["url"] = self._file_url(video["name"])
        return json_response(200, {"features": features, "videos": videos, "truncated": features_cut or videos_cut})

    async def video_file(self, request: Request) -> Response:
        name = request.query_params.get("name")
        token = request.query_params.get("token")
        try:
            if token is None or not hmac.compare_digest(token, self._token(name or "")):
                check_bearer(request, self.settings.api_key)
            if self.library is None:
                raise VideoRefused()
            real = self.library.confine(name)
            try:
                f = open_feature_file(real, self.library.folder)
            except SeqPANError:
                raise VideoRefused() from None
        except Refusal as refusal:
            return json_response(refusal.status, {"error": refusal.message}, refusal.headers)
        except VideoRefused:
            return json_response(404, {"error": VIDEO_REFUSED})
        size = f.seek(0, 2)
        return file_response(f, real, size, request.headers.get("range"),
                             {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}, request.method == "HEAD")

    async def extract(self, request: Request) -> Response:
        try:
            check_bearer(request, self.settings.api_key)
            claim = self.budget.claim()
            try:
                body = parse_json(await read_body(request, MAX_EXTRACT_BODY, claim))
            except RequestError as err:
                return json_response(400, {"error": f"body: {err}"})
            finally:
                claim.release()
            if not isinstance(body, dict) or "video" not in body:
                return json_response(400, {"error": 'body must be a JSON object {"video": NAME}'})
            if self.library is None:
                raise VideoRefused()
            job = await asyncio.to_thread(self.library.start, body["video"])
        except Refusal as refusal:
            return json_response(refusal.status, {"error": refusal.message}, refusal.headers)
        except VideoRefused:
            return json_response(404, {"error": VIDEO_REFUSED})
        return json_response(200, {"video": job.name, **job.to_json()})

    def _token(self, name: str) -> str:
        key = self.settings.api_key
        return hmac.new(key.encode(), f"video:{name}".encode(), hashlib.sha256).hexdigest() if key else ""

    def _file_url(self, name: str) -> str:
        url = f"/v1/videos/file?name={quote(name, safe='')}"
        return f"{url}&token={self._token(name)}" if self.settings.api_key else url
