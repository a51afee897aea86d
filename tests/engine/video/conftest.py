"""Shared video fixtures: He-scaled random I3D weights saved as piergiaj publishes them."""
import pytest
import torch

from engine.video.weights import random_i3d


@pytest.fixture(scope="session")
def i3d_weights(tmp_path_factory):
    """A `rgb_charades.pt`-shaped file (157 classes) of He-scaled random weights."""
    path = tmp_path_factory.mktemp("i3d") / "rgb_charades.pt"
    torch.save(random_i3d(0, num_classes=157).state_dict(), path)
    return path
