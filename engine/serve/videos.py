"""Registered videos: a client sends a video's features once and grounds queries against it by id.

    PUT    /v1/videos/{id}   body: a .npy file, or {"shape": [T, D], "dtype": "float32", "base64": ...};
                             201 (new) or 200 (replaced) with {"id", "shape", "dtype", "bytes"}
    GET    /v1/videos/{id}   {"id", "shape", "dtype", "bytes"}, or 404
    DELETE /v1/videos/{id}   204, or 404

An entry of POST /v1/ground names one as `{"features": {"registered": ID}, ...}`: `RegisteredVideos.resolve`
puts its features in place before the engine sees the entry, so the engine's cache of encoded videos
(keyed by the features' content) encodes it once for all its queries. The store belongs to the server
(one per process or Ray Serve replica) and is shared by every caller holding its API key. It keeps at
most `max_videos` videos and `max_video_bytes` bytes of features; a video that does not fit drops the
least recently used ones (registered or grounded on) until it fits. An id is a name, 1 to 128 of
A-Z a-z 0-9 . _ - and not `.` or `..`; `file` and `extract` are the page's routes (page.py), refused here.
"""
from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import re
from collections import OrderedDict
from typing import Callable, Sequence

import numpy as np
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from reference.errors import SeqPANError

from ..data.features import load_features, read_features
from ..errors import RequestError
from ..limits import Limits
from ..prepare import check_registered_id
from ..requests import GroundingRequest, GroundingResult, RegisteredVideo
from ..wire import binary_features, parse_json
from .guards import BodyBudget, Refusal, check_bearer, check_ready, read_body
from .protocol import BODY_TIMED_OUT
from .service import GroundingService

log = logging.getLogger("seqpan.serve")
ROUTE = "/v1/videos/{id}"
PAGE_NAMES = ("file", "extract")  # /v1/videos/file and /v1/videos/extract are the page's routes
JSON_BODY = re.compile(rb"[ \t\n\r]*\{")
REGISTERING_OFF = "this server keeps no registered videos (seqpan serve --max-videos 0, or Ray Serve with several replicas)"


class VideoStore:
    """Read-only float32 features by id: at most `max_videos` of them and `max_bytes` bytes in all.
    `put` drops the least recently used (put or taken by `get`) until a new video fits. Used from the
    server's event loop only."""

    def __init__(self, max_videos: int, max_bytes: int):
        self.max_videos, self.max_bytes = max_videos, max_bytes
        self.videos: OrderedDict[str, np.ndarray] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.videos)

    def put(self, video_id: str, features: np.ndarray) -> bool:
        """Keep `features` under `video_id` (replacing what was there); True when the id is new.
        Refusal (413) when they alone are larger than the store."""
        if features.nbytes > self.max_bytes:
            raise Refusal(413, f"a video of {features.nbytes} bytes of features is larger than the store of "
                               f"registered videos ({self.max_bytes} bytes)", "too_large")
        new = not self.delete(video_id)
        while self.videos and (len(self.videos) >= self.max_videos or self.bytes + features.nbytes > self.max_bytes):
            self.bytes -= self.videos.popitem(last=False)[1].nbytes
        features.flags.writeable = False  # shared by every request that names it
        self.videos[video_id] = features
        self.bytes += features.nbytes
        return new

    def get(self, video_id: str) -> np.ndarray | None:
        """The features kept under `video_id` (now the most recently used), or None."""
        features = self.videos.get(video_id)
        if features is not None:
            self.videos.move_to_end(video_id)
        return features

    def delete(self, video_id: str) -> bool:
        """Drop `video_id`'s features; False when none were kept."""
        features = self.videos.pop(video_id, None)
        if features is not None:
            self.bytes -= features.nbytes
        return features is not None


def uploaded_features(body: bytes, visual_dim: int, limits: Limits) -> np.ndarray:
    """A PUT body's features as float32 [T, D], checked as a request's features are: the JSON object
    of binary features (`wire.binary_features`), or else a .npy file (read by its header, never
    unpickled). RequestError or FeatureError (one line) for anything else."""
    if JSON_BODY.match(body):
        features = binary_features(parse_json(body), limits)
        return load_features(features, visual_dim, max_clips=limits.max_clips, max_bytes=limits.max_feature_bytes)
    return read_features(io.BytesIO(body), "body", visual_dim, limits.max_clips, limits.max_feature_bytes)


class RegisteredVideos:
    """The routes of registered videos (`routes`) and the hook that serves the entries of POST
    /v1/ground naming one (`resolve`). `respond(route, status, payload, headers, body=...)` answers."""

    def __init__(self, service: GroundingService, budget: BodyBudget, respond: Callable[..., Response]):
        self.service, self.settings, self.budget, self.respond = service, service.settings, budget, respond
        self.store = VideoStore(self.settings.max_videos, self.settings.max_video_bytes)
        service.metrics.registered_videos.set_function(lambda: len(self.store))
        service.metrics.registered_video_bytes.set_function(lambda: self.store.bytes)
        self.routes = [Route(ROUTE, self.video, methods=["GET", "PUT", "DELETE"])]

    def resolve(self, entries: Sequence[GroundingRequest | GroundingResult]) -> list[GroundingRequest | GroundingResult]:
        """Each request naming a registered video with that video's features; one naming an id that
        is not kept becomes its error, named by its position as the body's other errors are."""
        return [self._with_features(e, i) if isinstance(e, GroundingRequest) and isinstance(e.features, RegisteredVideo)
                else e for i, e in enumerate(entries)]

    def _with_features(self, request: GroundingRequest, index: int) -> GroundingRequest | GroundingResult:
        video_id = request.features.id
        features = self.store.get(video_id) if self.settings.max_videos else None
        if features is not None:
            return dataclasses.replace(request, features=features)
        why = REGISTERING_OFF if not self.settings.max_videos else (
            f"no video is registered under {video_id!r} (PUT /v1/videos/{video_id} registers it; when the "
            "store is full the least recently used are dropped)")
        return GroundingResult(request.id, error=f"requests[{index}]: {why}")

    async def video(self, request: Request) -> Response:
        claim = self.budget.claim()
        try:
            check_bearer(request, self.settings.api_key)
            if not self.settings.max_videos:
                raise Refusal(404, REGISTERING_OFF, "off")
            video_id = check_registered_id(request.path_params["id"])
            if video_id in PAGE_NAMES:
                raise RequestError(f"{video_id!r} names one of the page's routes; choose another id")
            if request.method == "PUT":
                check_ready(self.service.ready)
                body = await read_body(request, self.settings.max_body_bytes, claim)
                engine = self.service.engine
                features = await asyncio.to_thread(uploaded_features, body, engine.cfg.visual_dim, engine.limits)
                del body
                new = self.store.put(video_id, features)
                return self.respond(ROUTE, 201 if new else 200, described(video_id, features))
            features = self.store.videos.get(video_id)  # looking does not count as use
            if features is None:
                raise Refusal(404, f"no video is registered under {video_id!r}", "unknown")
            if request.method == "DELETE":
                self.store.delete(video_id)
                return self.respond(ROUTE, 204, body=b"")
            return self.respond(ROUTE, 200, described(video_id, features))  # GET (or HEAD, which Starlette adds)
        except SeqPANError as err:  # RequestError, FeatureError: what the client sent
            return self.respond(ROUTE, 400, {"error": str(err)})
        except Refusal as refusal:
            return self.respond(ROUTE, refusal.status, {"error": refusal.message}, refusal.headers)
        except ClientDisconnect:  # the body stopped coming: nothing was stored
            return self.respond(ROUTE, 408 if request.scope.get(BODY_TIMED_OUT, False) else 499, {"error": "client gone"})
        except Exception:  # a bug: the log gets the traceback, the client one line
            log.exception("%s %s failed", request.method, ROUTE)
            return self.respond(ROUTE, 500, {"error": "internal server error"})
        finally:
            claim.release()


def described(video_id: str, features: np.ndarray) -> dict:
    """What GET and PUT answer about a registered video."""
    return {"id": video_id, "shape": list(features.shape), "dtype": "float32", "bytes": features.nbytes}
