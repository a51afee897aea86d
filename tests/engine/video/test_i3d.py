"""I3D: the parameter layout of piergiaj/pytorch-i3d, feature shapes, 'SAME' padding, weight loading."""
import pytest
import torch

from engine.video.errors import VideoError
from engine.video.i3d import InceptionI3d, same_padding
from engine.video.weights import load_i3d, random_i3d

# Written down from piergiaj/pytorch-i3d `pytorch_i3d.py` (InceptionI3d.__init__): every Unit3D has
# conv3d.weight [out, in, kt, kh, kw] and, with batch norm, bn.{weight,bias,running_mean,running_var}
# [out] and bn.num_batches_tracked []; `logits` has conv3d.{weight,bias} and no batch norm.
STEM = {"Conv3d_1a_7x7": (64, 3, (7, 7, 7)), "Conv3d_2b_1x1": (64, 64, (1, 1, 1)),
        "Conv3d_2c_3x3": (192, 64, (3, 3, 3))}
MIXED = {  # name: (in_channels, [b0, b1a, b1b, b2a, b2b, b3b])
    "Mixed_3b": (192, [64, 96, 128, 16, 32, 32]),
    "Mixed_3c": (256, [128, 128, 192, 32, 96, 64]),
    "Mixed_4b": (128 + 192 + 96 + 64, [192, 96, 208, 16, 48, 64]),
    "Mixed_4c": (192 + 208 + 48 + 64, [160, 112, 224, 24, 64, 64]),
    "Mixed_4d": (160 + 224 + 64 + 64, [128, 128, 256, 24, 64, 64]),
    "Mixed_4e": (128 + 256 + 64 + 64, [112, 144, 288, 32, 64, 64]),
    "Mixed_4f": (112 + 288 + 64 + 64, [256, 160, 320, 32, 128, 128]),
    "Mixed_5b": (256 + 320 + 128 + 128, [256, 160, 320, 32, 128, 128]),
    "Mixed_5c": (256 + 320 + 128 + 128, [384, 192, 384, 48, 128, 128]),
}


def piergiaj_layout(num_classes: int) -> dict[str, tuple[int, ...]]:
    units = {name: spec for name, spec in STEM.items()}
    for name, (cin, (o0, o1a, o1b, o2a, o2b, o3b)) in MIXED.items():
        units.update({f"{name}.b0": (o0, cin, (1, 1, 1)), f"{name}.b1a": (o1a, cin, (1, 1, 1)),
                      f"{name}.b1b": (o1b, o1a, (3, 3, 3)), f"{name}.b2a": (o2a, cin, (1, 1, 1)),
                      f"{name}.b2b": (o2b, o2a, (3, 3, 3)), f"{name}.b3b": (o3b, cin, (1, 1, 1))})
    layout = {"logits.conv3d.weight": (num_classes, 1024, 1, 1, 1), "logits.conv3d.bias": (num_classes,)}
    for unit, (out, cin, kernel) in units.items():
        layout[f"{unit}.conv3d.weight"] = (out, cin, *kernel)
        for stat in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{unit}.bn.{stat}"] = (out,)
        layout[f"{unit}.bn.num_batches_tracked"] = ()
    return layout


@pytest.mark.parametrize("num_classes", [400, 157])
def test_state_dict_keys_and_shapes_are_piergiajs(num_classes):
    state = InceptionI3d(num_classes).state_dict()
    assert len(state) == 2 + 57 * 6  # logits + 3 stem units and 9 blocks of 6 units, 6 tensors each
    assert {k: tuple(v.shape) for k, v in state.items()} == piergiaj_layout(num_classes)


def test_same_padding_is_tensorflows():
    # TF 'SAME': out = ceil(size/stride), total pad = max((out-1)*stride + kernel - size, 0), more after
    for size in range(1, 40):
        for kernel in (1, 2, 3, 7):
            for stride in (1, 2):
                out = -(-size // stride)
                total = max((out - 1) * stride + kernel - size, 0)
                assert same_padding(size, kernel, stride) == (total // 2, total - total // 2)


def test_feature_steps_per_window():
    # three temporal stride-2 stages (ceil each time: 17 → 9 → 5 → 3), then AvgPool3d over 2 steps
    # with stride 1 → 2 steps (the 9-frame case, 1 step, runs in test_extract)
    with torch.inference_mode():
        out = random_i3d(0).features(torch.zeros(1, 3, 17, 224, 224))
    assert out.shape == (1, 2, 1024)


def test_weights_round_trip_and_legacy_files_without_batch_counters(tmp_path):
    model = random_i3d(3, num_classes=157)
    state = model.state_dict()
    torch.save(state, tmp_path / "rgb_charades.pt")
    loaded = load_i3d(tmp_path / "rgb_charades.pt")
    assert loaded.num_classes == 157 and not loaded.training
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    legacy = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # PyTorch < 0.4.1
    torch.save(legacy, tmp_path / "old.pt")
    assert torch.equal(load_i3d(tmp_path / "old.pt").Mixed_5c.b0.conv3d.weight, model.Mixed_5c.b0.conv3d.weight)


def test_weights_that_do_not_fit_are_named(tmp_path):
    state = random_i3d(0).state_dict()
    cases = {
        "missing": {k: v for k, v in state.items() if not k.startswith("Mixed_4c.b1b")},
        "wrong shape": {**state, "Mixed_3b.b0.conv3d.weight": torch.zeros(64, 191, 1, 1, 1)},
        "unexpected": {**state, "fc.weight": torch.zeros(3)},
        "no 'logits.conv3d.weight'": {k: v for k, v in state.items() if not k.startswith("logits")},
        "state dict of tensors": {"model": state, "epoch": 3},
    }
    for words, bad in cases.items():
        torch.save(bad, tmp_path / "w.pt")
        with pytest.raises(VideoError, match=words):
            load_i3d(tmp_path / "w.pt")
    (tmp_path / "t.pt").write_text("not a checkpoint")
    with pytest.raises(VideoError, match="not a PyTorch state dict"):
        load_i3d(tmp_path / "t.pt")
    with pytest.raises(VideoError, match="no such file"):
        load_i3d(tmp_path / "absent.pt")
