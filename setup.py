"""seqpan: a fast, exact inference engine for SeqPAN video grounding."""
from setuptools import find_packages, setup

# `seqpan serve`: the ASGI app and server, metrics, the HTTP client of its tests and load generator, Ray Serve;
# Ray Data (with pyarrow) for `seqpan ground --ray` and `seqpan extract-features --ray`
SERVE = ["starlette>=0.37", "uvicorn>=0.30", "httptools>=0.6", "uvloop>=0.19", "httpx>=0.27",
         "prometheus-client>=0.20", "ray[serve,data]>=2.40"]  # uvicorn runs on uvloop when it imports

setup(
    name="seqpan",
    version="0.1.0",
    description="Fast, exact, batch-invariant inference engine for SeqPAN video grounding",
    python_requires=">=3.10",
    packages=find_packages(include=["reference", "reference.*", "kernels", "kernels.*", "engine", "engine.*",
                                    "bench", "bench.*"]),
    package_data={"engine.data": ["annotations/*"], "engine.serve": ["static/*"]},  # the web page
    # torch is deliberately unpinned from above so that an existing CUDA build is kept; CPU-only
    # machines should install the CPU wheel first (see README: `pip install torch==2.13.0`).
    install_requires=["torch>=2.4", "numpy>=1.24", "safetensors>=0.4", "tqdm>=4.60",
                      "openvino>=2025.0"],  # the CPU fast path (the engine's default on CPU)
    extras_require={
        "triton": ["triton>=3.0"],
        "onnx": ["onnx>=1.16", "onnxscript>=0.1", "onnxruntime>=1.18"],
        "video": ["av>=18", "opencv-python-headless>=4.8"],
        "serve": SERVE,
        "test": ["pytest>=8", "pytest-benchmark>=4", "pytest-timeout>=2.3", "hypothesis>=6.100", "triton>=3.0",
                 "onnx>=1.16", "onnxscript>=0.1", "onnxruntime>=1.18", "av>=18", "opencv-python-headless>=4.8",
                 *SERVE, "playwright>=1.40", "matplotlib>=3.7"],  # the page: Debian chromium; ground --plot
        "bench": ["pytest-benchmark>=4", "matplotlib>=3.7", "locust>=2.20"],  # bench.serve_load drives locust
        "tensorrt": ["tensorrt>=10", "cuda-python>=12"],
        "mutation": ["mutmut==3.8.1"],  # tests/mutation/run.py (not run in CI)
    },
    entry_points={"console_scripts": ["seqpan=engine.cli:main"]},
)
