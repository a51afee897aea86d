"""Decoding a video file with PyAV as the original's `ffmpeg -i V [-filter:v fps=fps=R] %6d.jpg`
did: upright (the CLI's autorotation), at a constant frame rate (the preset's, or the stream's own),
timestamps taken from the container's start."""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .errors import VideoError

DEFAULT_RATE = Fraction(25)  # what the CLI assumes for a stream that states no rate


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's first video stream."""

    path: Path
    width: int
    height: int
    rate: Fraction       # the stream's frame rate as the CLI guesses it
    duration: float      # seconds (container duration, else the stream's)
    sample_aspect_ratio: Fraction | None  # None when the stream does not state it


def open_video(path: str | Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """The opened container and its first video stream, or a VideoError saying why not."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video {path}: no such file")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise VideoError(f"video {path}: not a readable video file ({exc.strerror or type(exc).__name__})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"video {path}: no video stream")
    return container, container.streams.video[0]


def probe(path: str | Path) -> VideoInfo:
    """Size, frame rate and duration of a video without decoding it."""
    container, stream = open_video(path)
    with container:
        if container.duration is not None:
            duration = container.duration / av.time_base
        elif stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            raise VideoError(f"video {path}: the container states no duration")
        ctx = stream.codec_context
        return VideoInfo(Path(path), ctx.width, ctx.height, stream.guessed_rate or DEFAULT_RATE, duration,
                         stream.sample_aspect_ratio or None)


def _rotation_filters(frame: av.VideoFrame) -> list[tuple[str, str | None]]:
    """The filters the ffmpeg CLI inserts to show a frame upright, from its display matrix."""
    matrix = next((np.frombuffer(bytes(side), np.int32) for side in frame.side_data
                   if side.type == av.sidedata.sidedata.Type.DISPLAYMATRIX), None)
    if matrix is None:
        return []
    theta = -round(frame.rotation)  # clockwise degrees, normalised to [0, 360) as the CLI does
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return [("transpose", "cclock_flip" if matrix[3] > 0 else "clock")]
    if abs(theta - 180) < 1:
        return [(name, None) for name, flip in (("hflip", matrix[0] < 0), ("vflip", matrix[4] < 0)) if flip]
    if abs(theta - 270) < 1:
        return [("transpose", "clock_flip" if matrix[3] < 0 else "cclock")]
    if abs(theta) < 1:
        return [("vflip", None)] if matrix[4] < 0 else []
    raise VideoError(f"display rotation of {theta:.0f} degrees is not supported (only multiples of 90)")


class _Graph:
    """buffer → [autorotation] → fps → [format] → sink, built from the first decoded frame."""

    def __init__(self, first: av.VideoFrame, time_base: Fraction, rate: Fraction, pix_fmt: str,
                 keep: frozenset[str]):
        self.graph = av.filter.Graph()
        nodes = [self.graph.add_buffer(width=first.width, height=first.height, format=first.format.name,
                                       time_base=time_base)]
        filters = _rotation_filters(first) + [("fps", f"fps={rate.numerator}/{rate.denominator}")]
        if first.format.name not in keep:
            filters.append(("format", f"pix_fmts={pix_fmt}"))
        nodes += [self.graph.add(name, args) for name, args in filters]
        nodes.append(self.graph.add("buffersink"))
        self.graph.link_nodes(*nodes).configure()

    def push(self, frame: av.VideoFrame | None) -> Iterator[av.VideoFrame]:
        self.graph.vpush(frame)
        while True:
            try:
                yield self.graph.vpull()
            except (av.BlockingIOError, av.EOFError):
                return


def decode_frames(path: str | Path, rate: Fraction | None, pix_fmt: str,
                  keep: frozenset[str] = frozenset()) -> Iterator[av.VideoFrame]:
    """The frames of `path` upright at `rate` frames/s (None: the stream's own rate, at which a
    constant-rate video's frames pass unchanged), converted to `pix_fmt` by libswscale unless the
    decoded format is in `keep`."""
    container, stream = open_video(path)
    stream.thread_type = "AUTO"  # decoders are bit-exact whatever their threading
    rate = Fraction(rate) if rate is not None else (stream.guessed_rate or DEFAULT_RATE)
    start = container.start_time or 0
    offset = int(Fraction(start, av.time_base) / stream.time_base) if start else 0
    graph, last_pts, step = None, None, max(1, int(1 / (rate * stream.time_base)))
    try:
        with container:
            for frame in container.decode(stream):
                if frame.pts is None:  # some containers (raw streams) give none: continue the count
                    frame.pts = frame.dts if frame.dts is not None else (0 if last_pts is None else last_pts + step)
                last_pts = frame.pts
                frame.pts -= offset
                if graph is None:
                    graph = _Graph(frame, stream.time_base, rate, pix_fmt, keep)
                yield from graph.push(frame)
            if graph is not None:
                yield from graph.push(None)
    except av.FFmpegError as exc:
        raise VideoError(f"video {path}: decoding failed ({exc.strerror or type(exc).__name__})") from None
