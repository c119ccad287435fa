"""Inference backends: ONNX Runtime, TensorRT, or any object with infer(feeds) -> outputs."""
