"""Compiled paths: the localizer exported to ONNX (and the `onnx` backend that runs it), TensorRT
engines with their cache, and the torch.compile + CUDA-graph fallback."""
