"""The I3D runner on a GPU (run by bench/gpu_check.sh): fp32 agrees with the CPU, bf16 within the
project's bf16 tolerance, CUDA graphs and batching change nothing beyond rounding."""
import numpy as np
import pytest
import torch

from engine.video.eager_i3d import WindowRunner
from engine.video.weights import random_i3d

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")]


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_gpu_runner_matches_cpu_fp32():
    windows = np.random.default_rng(0).integers(0, 256, (4, 16, 224, 224, 3), dtype=np.uint8)
    model = random_i3d(0)
    cpu = WindowRunner(random_i3d(0))(windows)
    fp32 = WindowRunner(model, "cuda", "fp32")(windows)
    assert rel(fp32, cpu) < 1e-4
    assert rel(WindowRunner(random_i3d(0), "cuda", "bf16")(windows), cpu) < 2e-2
    graphed = WindowRunner(random_i3d(0), "cuda", "fp32", cuda_graphs=True, batch_size=4)
    assert rel(graphed(windows[:3]), fp32[:3]) < 1e-6  # a partial batch, padded inside the graph
    single = np.concatenate([WindowRunner(random_i3d(0), "cuda", "fp32")(windows[i:i + 1]) for i in range(4)])
    assert rel(single, fp32) < 1e-4
