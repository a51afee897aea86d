"""The HTTP API as an ASGI app: POST /v1/ground, GET /health, /ready, /metrics (and the page's routes,
page.py, and those of registered videos, videos.py)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import QueueFullError
from ..requests import GroundingRequest
from .guards import BodyBudget, Refusal, check_bearer, check_ready, read_body
from .page import Page
from .parsing import BodyError, BodyTooLarge, parse_body
from .protocol import BODY_TIMED_OUT
from .service import GroundingService
from .videos import RegisteredVideos

log = logging.getLogger("seqpan.serve")
RETRY_AFTER_S = "1"
# a body up to this size is parsed on the event loop (~0.4 ms at most, a few dozen us for one query);
# a larger one in a thread, so the loop keeps serving: the hop to a thread and back costs ~0.1 ms
INLINE_PARSE_BYTES = 8 * 1024


def build_app(service: GroundingService, replica: str | None = None) -> "GroundFirst":
    """The API in front of `service`; `replica` (if given) is sent in an `X-SeqPAN-Replica` header.
    Starting the app starts loading the model in the background; stopping it drains the batcher."""
    api = Api(service, replica)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        service.start_loading()
        yield
        await asyncio.to_thread(service.close)

    app = Starlette(routes=api.routes, lifespan=lifespan)
    app.router.redirect_slashes = False  # a redirect would name the client's own Host header
    return GroundFirst(app, api)


class GroundFirst:
    """The app, with POST /v1/ground taken straight to its handler: the grounding route skips
    Starlette's middleware and route matching (its handler answers every error itself), everything
    else goes through them."""

    def __init__(self, app: Starlette, api: "Api"):
        self.app, self.api = app, api

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/ground" and scope["method"] == "POST":
            response = await self.api.ground(Request(scope, receive, send))
            await response(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class Api:
    """The routes of the HTTP API, each a method: POST /v1/ground, GET /health, /ready, /metrics,
    and the page's (page.py) and registered videos' (videos.py)."""

    def __init__(self, service: GroundingService, replica: str | None = None):
        self.service, self.settings, self.metrics = service, service.settings, service.metrics
        self.extra_headers = {"X-SeqPAN-Replica": replica} if replica is not None else {}
        self.budget = BodyBudget(self.settings.max_bodies_bytes)
        self.page = Page(self.settings, self.budget)  # the web page at / and its routes; serves `video` entries
        self.videos = RegisteredVideos(service, self.budget, self.respond)  # serves `registered` entries
        self.routes = [Route("/v1/ground", self.ground, methods=["POST"]),
                       Route("/health", self.health, methods=["GET"]), Route("/ready", self.ready, methods=["GET"]),
                       Route("/metrics", self.metrics_text, methods=["GET"]), *self.page.routes,
                       *self.videos.routes]  # after the page's: /v1/videos/file and /extract are its own

    def respond(self, route: str, status: int, payload=None, headers=None, body: bytes | None = None,
                media_type: str = "application/json") -> Response:
        self.metrics.http_requests.labels(route, str(status)).inc()
        if body is None:
            body = json.dumps(payload, allow_nan=False).encode()
        return Response(body, status, {**self.extra_headers, **(headers or {})}, media_type)

    async def ground(self, request: Request) -> Response:
        service, settings, metrics, respond = self.service, self.settings, self.metrics, self.respond
        started = time.perf_counter()
        metrics.in_progress.inc()
        claim, entries = self.budget.claim(), []
        try:
            check_bearer(request, settings.api_key)
            check_ready(service.ready)
            body = await read_body(request, settings.max_body_bytes, claim)
            if len(body) <= INLINE_PARSE_BYTES:  # fewer than the thread hop costs (docs/performance.md)
                entries = parse_body(body, service.engine.limits, settings.max_queue)
            else:
                entries = await asyncio.to_thread(parse_body, body, service.engine.limits, settings.max_queue)
            del body
            entries = self.videos.resolve(await self.page.resolve_videos(entries))
            results = await until_disconnected(request, service.ground(entries))
            payload = {"results": [r.to_json() for r in results]}
            response = respond("/v1/ground", 200, payload)
            metrics.latency.observe(time.perf_counter() - started)
            return response
        except ClientDisconnect:  # the body stopped coming, or the client left before its answer
            timed_out = request.scope.get(BODY_TIMED_OUT, False)
            metrics.rejections.labels("body_timeout" if timed_out else "client_gone").inc()
            waiting = sum(isinstance(e, GroundingRequest) for e in entries)
            log.warning("POST /v1/ground from %s: %s; its %d requests withdrawn unless already running", _peer(request),
                        "its body did not arrive in time" if timed_out else "the client went away", waiting)
            return respond("/v1/ground", 408 if timed_out else 499, {"error": "client gone"})
        except BodyError as err:
            metrics.rejections.labels("malformed").inc()
            return respond("/v1/ground", 400, {"error": str(err)})
        except BodyTooLarge as err:
            metrics.rejections.labels("too_large").inc()
            return respond("/v1/ground", 413, {"error": str(err)})
        except QueueFullError:
            metrics.rejections.labels("queue_full").inc()
            return respond("/v1/ground", 429, {"error": "the request queue is full; retry later"},
                           {"Retry-After": RETRY_AFTER_S})
        except Refusal as refusal:
            metrics.rejections.labels(refusal.reason).inc()
            return respond("/v1/ground", refusal.status, {"error": refusal.message}, refusal.headers)
        except Exception:  # a bug: the log gets the traceback, the client one line
            log.exception("POST /v1/ground failed")
            return respond("/v1/ground", 500, {"error": "internal server error"})
        finally:
            claim.release()
            metrics.in_progress.dec()

    async def health(self, request: Request) -> Response:
        return self.respond("/health", 200, {"status": "ok"})

    async def ready(self, request: Request) -> Response:
        if self.service.ready:
            return self.respond("/ready", 200, {"status": "ready", "engine": self.service.engine.description})
        status = "failed to load the model (see the server's log)" if self.service.failure else "loading"
        return self.respond("/ready", 503, {"status": status})

    async def metrics_text(self, request: Request) -> Response:
        body, content_type = self.metrics.render()
        return self.respond("/metrics", 200, body=body, media_type=content_type)


async def until_disconnected(request: Request, work):
    """The result of the coroutine `work`, unless the client disconnects first: then `work` is
    cancelled (what it has not started is withdrawn) and ClientDisconnect is raised."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            raise ClientDisconnect()
        return task.result()
    finally:
        gone.cancel()
        task.cancel()  # nothing when it is done


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "a client"
