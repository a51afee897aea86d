"""Compiled paths: the localizer exported to ONNX (and the `onnx` backend that runs it), TensorRT
engines with their cache, the torch.compile + CUDA-graph fallback, and the CPU fast path (the whole
model compiled by OpenVINO per bucket shape)."""
