"""The HTTP API as an ASGI app: POST /v1/ground, GET /health, /ready, /metrics (and the page's routes, page.py)."""
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
from .guards import BodyBudget, Refusal, check_bearer, read_body
from .page import Page
from .parsing import BodyError, BodyTooLarge, parse_body
from .protocol import BODY_TIMED_OUT
from .service import GroundingService

log = logging.getLogger("seqpan.serve")
RETRY_AFTER_S = "1"


def build_app(service: GroundingService, replica: str | None = None) -> Starlette:
    """The API in front of `service`; `replica` (if given) is sent in an `X-SeqPAN-Replica` header.
    Starting the app starts loading the model in the background; stopping it drains the batcher."""
    settings, metrics = service.settings, service.metrics
    extra_headers = {"X-SeqPAN-Replica": replica} if replica is not None else {}
    budget = BodyBudget(settings.max_bodies_bytes)
    page = Page(settings, budget)  # the web page at / and the routes it needs; serves `video` entries

    def respond(route: str, status: int, payload=None, headers=None, body: bytes | None = None,
                media_type: str = "application/json") -> Response:
        metrics.http_requests.labels(route, str(status)).inc()
        if body is None:
            body = json.dumps(payload, allow_nan=False).encode()
        return Response(body, status, {**extra_headers, **(headers or {})}, media_type)

    async def ground(request: Request) -> Response:
        started = time.perf_counter()
        metrics.in_progress.inc()
        claim, entries = budget.claim(), []
        try:
            check_bearer(request, settings.api_key)
            if not service.ready:
                raise Refusal(503, "the model is still loading; retry later", "not_ready",
                              {"Retry-After": RETRY_AFTER_S})
            body = await read_body(request, settings.max_body_bytes, claim)
            entries = await asyncio.to_thread(parse_body, body, service.engine.limits, settings.max_queue)
            del body
            results = await until_disconnected(request, service.ground(await page.resolve_videos(entries)))
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

    async def health(request: Request) -> Response:
        return respond("/health", 200, {"status": "ok"})

    async def ready(request: Request) -> Response:
        if service.ready:
            return respond("/ready", 200, {"status": "ready", "engine": service.engine.description})
        status = "failed to load the model (see the server's log)" if service.failure else "loading"
        return respond("/ready", 503, {"status": status})

    async def metrics_text(request: Request) -> Response:
        body, content_type = metrics.render()
        return respond("/metrics", 200, body=body, media_type=content_type)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        service.start_loading()
        yield
        await asyncio.to_thread(service.close)

    routes = [Route("/v1/ground", ground, methods=["POST"]), Route("/health", health, methods=["GET"]),
              Route("/ready", ready, methods=["GET"]), Route("/metrics", metrics_text, methods=["GET"]), *page.routes]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.router.redirect_slashes = False  # a redirect would name the client's own Host header
    return app


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
