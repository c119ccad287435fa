"""omc: the OMC multi-object tracker ("One More Check", AAAI 2022) as deployable engines.

Subpackages follow the pipeline: `omc.export` (PyTorch network, checkpoints, ONNX and TensorRT
engines), `omc.calib` (INT8 calibration), `omc.runtime` (torch-free tracker around the engines),
`omc.benchmarks`. Only `omc.runtime` is meant to be imported by edge applications.
"""

__version__ = "0.1.0"
