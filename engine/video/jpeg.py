"""The original's JPEG round trip, reproduced in memory: frames converted to full-range YUV 4:2:0
as the ffmpeg CLI (libswscale before its 7.x rewrite) does, encoded by libavcodec's mjpeg encoder
with the CLI's defaults (200 kb/s rate control at the output frame rate, one slice), decoded by
OpenCV (libjpeg) to RGB. Measured against the ffmpeg 5.1 CLI writing `%6d.jpg`: decoded pixels
identical on every frame (tests/engine/video/test_against_ffmpeg_cli.py)."""
from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np


def _to_full_range_luma(y: np.ndarray) -> np.ndarray:
    v = (np.minimum(y << 7, 30189) * 19077 - 39057361) >> 14
    return np.clip((v + 64) >> 7, 0, 255)


def _to_full_range_chroma(c: np.ndarray) -> np.ndarray:
    v = (np.minimum(c << 7, 30775) * 4663 - 9289992) >> 12
    return np.clip((v + 64) >> 7, 0, 255)


# libswscale's fixed-point limited→full range conversion is per sample: tabulate it
_LUMA = _to_full_range_luma(np.arange(256, dtype=np.int64)).astype(np.uint8)
_CHROMA = _to_full_range_chroma(np.arange(256, dtype=np.int64)).astype(np.uint8)


def read_plane(plane) -> np.ndarray:
    """One 8-bit plane of a frame as a 2-D array (line padding dropped)."""
    rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, :plane.width]


_IDENTITY = np.arange(256, dtype=np.uint8)
CLI_CONVERTED = frozenset({"yuv420p", "yuvj420p"})  # formats converted here; others by libswscale


def to_cli_yuvj420p(frame: av.VideoFrame) -> av.VideoFrame:
    """A yuv420p frame → yuvj420p with the CLI's conversion (none when already full range);
    yuvj420p passes as is."""
    if frame.format.name == "yuvj420p":
        return frame
    full = frame.color_range == 2  # AVCOL_RANGE_JPEG
    tables = (_IDENTITY,) * 3 if full else (_LUMA, _CHROMA, _CHROMA)
    out = av.VideoFrame(frame.width, frame.height, "yuvj420p")
    for src, dst, table in zip(frame.planes, out.planes, tables):
        converted = table[read_plane(src)]
        padded = np.zeros((dst.height, dst.line_size), np.uint8)
        padded[:, :dst.width] = converted
        dst.update(padded)
    return out


class JpegRoundTrip:
    """Encodes yuvj420p frames one after another as the CLI's image2 output at `rate` frames/s
    would, and returns each decoded back by OpenCV as an RGB uint8 array. `sample_aspect_ratio`
    is the video's (None when it states none): the CLI writes a JFIF header only when it is known,
    and the header's bytes count in the rate control, so it changes later frames' quality."""

    def __init__(self, rate: Fraction, sample_aspect_ratio: Fraction | None = None):
        self.rate, self.sample_aspect_ratio = Fraction(rate), sample_aspect_ratio
        self.encoder: av.CodecContext | None = None
        self.index = 0

    def _open(self, frame: av.VideoFrame) -> av.CodecContext:
        encoder = av.CodecContext.create("mjpeg", "w")
        encoder.width, encoder.height, encoder.pix_fmt = frame.width, frame.height, "yuvj420p"
        encoder.time_base, encoder.framerate = 1 / self.rate, self.rate
        encoder.bit_rate = 200_000               # the CLI's default rate (no -q, no -b)
        encoder.thread_count = 1                 # several threads would cut the JPEG into slices
        if self.sample_aspect_ratio:
            encoder.sample_aspect_ratio = self.sample_aspect_ratio
        return encoder

    def encode(self, frame: av.VideoFrame) -> bytes:
        """The JPEG file the CLI would have written for the next frame."""
        if self.encoder is None:
            self.encoder = self._open(frame)
        frame.pts, frame.time_base = self.index, self.encoder.time_base
        self.index += 1
        packets = self.encoder.encode(frame)  # mjpeg is intra-only: one packet per frame, no delay
        return bytes(packets[0])

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        bgr = cv2.imdecode(np.frombuffer(self.encode(frame), np.uint8), cv2.IMREAD_COLOR)
        return bgr[:, :, ::-1]
