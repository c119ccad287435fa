"""PyTorch network, checkpoints, ONNX export and TensorRT engine building (needs the export extra)."""
