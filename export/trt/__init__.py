"""TensorRT engines from the ONNX export: `omc build` (builder.py, cli.py) and `omc verify --backend trt` (verify.py).

Nothing here is imported by the runtime; nothing here imports TensorRT at module level.
"""
