"""An engine model of an omc Triton repository made with `--platform python`: copied there as
model.py beside model.onnx.

It runs the ONNX file with ONNX Runtime (CPU) inside Triton's Python backend, for servers without
Triton's ONNX Runtime backend (PyTriton's bundled server has the Python backend only; the
end-to-end tests use it). It behaves as Triton's own backends do: for a batched model
(max_batch_size > 0) the requests the dynamic batcher hands over in one call are concatenated
along the batch axis, run once and split back; an unbatched model runs each request alone. It
answers the outputs each request asked for.

It needs NumPy, ONNX Runtime and Triton's `triton_python_backend_utils`; every name comes from the
ONNX file and config.pbtxt.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

MODEL_FILE = "model.onnx"


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.batched = config["max_batch_size"] > 0
        self.input_names = [item["name"] for item in config["input"]]
        self.output_names = [item["name"] for item in config["output"]]
        path = os.path.join(args["model_repository"], args["model_version"], MODEL_FILE)
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        if not self.batched:
            return [self._respond(request, self._run([request])[0]) for request in requests]
        return [self._respond(request, outputs) for request, outputs in zip(requests, self._run(requests))]

    def _run(self, requests):
        """Outputs (name -> array) of each request; one ONNX Runtime run for all of them."""
        feeds_per_request = [
            {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names}
            for request in requests
        ]
        if len(requests) == 1:
            return [dict(zip(self.output_names, self.session.run(self.output_names, feeds_per_request[0])))]
        sizes = [len(feeds[self.input_names[0]]) for feeds in feeds_per_request]
        feeds = {name: np.concatenate([f[name] for f in feeds_per_request]) for name in self.input_names}
        batch = dict(zip(self.output_names, self.session.run(self.output_names, feeds)))
        bounds = np.cumsum([0] + sizes)
        return [{name: value[bounds[i]:bounds[i + 1]] for name, value in batch.items()} for i in range(len(sizes))]

    def _respond(self, request, outputs):
        wanted = request.requested_output_names() or self.output_names
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, np.ascontiguousarray(outputs[name])) for name in wanted]
        )
