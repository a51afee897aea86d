"""Fixtures shared by the video tests of several packages (engine/video, engine/cli)."""
import pytest
import torch

from engine.io.checkpoint import save_checkpoint
from engine.video.weights import random_i3d
from reference.testing import random_model
from tests.engine.test_engine import CHAR_DICT, WORD_DICT
from tests.helpers import small_config


@pytest.fixture(scope="session")
def i3d_weights(tmp_path_factory):
    """A `rgb_charades.pt`-shaped file (157 classes) of He-scaled random weights."""
    path = tmp_path_factory.mktemp("i3d") / "rgb_charades.pt"
    torch.save(random_i3d(0, num_classes=157).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def video_clip(tmp_path_factory, i3d_weights):
    """An 18-frame 24 fps video (one Charades window of 17 frames: 2 feature steps) and its features."""
    pytest.importorskip("av", reason="the video path needs PyAV (pip install -e '.[video]')")
    pytest.importorskip("cv2", reason="the video path needs OpenCV (pip install -e '.[video]')")
    from engine.video.extract import make_extractor
    from engine.video.synthetic import write_video

    root = tmp_path_factory.mktemp("clip")
    video = write_video(root / "clip.mp4", 18, 80, 60, rate=24)
    return root, video, make_extractor(i3d_weights, "charades", device="cpu").extract(video)


@pytest.fixture(scope="session")
def video_checkpoint(tmp_path_factory):
    """A tiny SeqPAN checkpoint that takes I3D's 1024-d features."""
    model = random_model(small_config(visual_dim=1024, max_pos_len=16), seed=1)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.safetensors", model, WORD_DICT, CHAR_DICT)
