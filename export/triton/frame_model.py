"""The frame model of an omc Triton repository (Python backend, BLS): copied there as model.py.

One request is one frame: `images` uint8 [1, H, W, 3], optional `tracklets` float32 [n, E],
optional `score_floors` float32 [2]. The model calls the detector model on the frame and then,
only when tracklets came with it, the re-check model on the detector's maps of that frame, so
the maps never leave the server. It answers the detector's candidate rows and the re-check's
peak rows, each in their order, without the rows scoring at or below their floor (the client's
conf_thres and recheck_score_thres: the tracker drops those anyway); with no tracklets the
re-check outputs have zero rows. Engine outputs that arrive in GPU memory (no NumPy view of
them here) are passed through untrimmed.

It runs inside Triton with only NumPy and Triton's `triton_python_backend_utils`; every model
and tensor name comes from the `omc_wiring` parameter that `omc triton-repo` wrote into
config.pbtxt. Each instance runs one request at a time; the detector calls of the instances'
concurrent requests meet in the detector's dynamic batcher.
"""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils

WIRING_PARAMETER = "omc_wiring"


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.wiring = json.loads(config["parameters"][WIRING_PARAMETER]["string_value"])

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(pb_utils.InferenceResponse(output_tensors=self._frame(request)))
            except pb_utils.TritonModelException as exc:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc))))
        return responses

    def _frame(self, request):
        wiring = self.wiring
        images = pb_utils.get_input_tensor_by_name(request, wiring["images"])
        tracklets = pb_utils.get_input_tensor_by_name(request, wiring["tracklets"]) if wiring["recheck"] else None
        floors_tensor = pb_utils.get_input_tensor_by_name(request, wiring["score_floors"])
        floors = floors_tensor.as_numpy().astype(np.float32) if floors_tensor is not None else None
        rechecks = tracklets is not None and tracklets.shape()[0] > 0
        detector_names = wiring["detector_outputs"] + (wiring["maps"] if rechecks else [])
        detected = _infer(wiring["detector"], [images], detector_names)
        outputs = _trimmed(
            [detected[name] for name in wiring["detector_outputs"]], wiring["detector_scores"],
            None if floors is None else floors[0],
        )  # fmt: skip
        if not wiring["recheck"]:
            return outputs
        if rechecks:
            feeds = [detected[name] for name in wiring["maps"]] + [tracklets]
            rechecked = _infer(wiring["recheck"], feeds, wiring["recheck_outputs"])
            outputs += _trimmed(
                [rechecked[name] for name in wiring["recheck_outputs"]], wiring["recheck_scores"],
                None if floors is None else floors[1],
            )  # fmt: skip
        else:
            outputs += _empty_recheck(wiring)
        return outputs


def _infer(model, inputs, output_names):
    """Run `model` on `inputs` (pb_utils.Tensor list); name -> pb_utils.Tensor of its outputs."""
    response = pb_utils.InferenceRequest(model_name=model, requested_output_names=output_names, inputs=inputs).exec()
    if response.has_error():
        raise pb_utils.TritonModelException(f"{model}: {response.error().message()}")
    return {name: pb_utils.get_output_tensor_by_name(response, name) for name in output_names}


def _trimmed(tensors, score_name, floor):
    """The [1, rows, ...] tensors without the rows whose score is not above `floor` (order kept);
    as they are without a floor or when one is in GPU memory."""
    if floor is None or not all(tensor.is_cpu() for tensor in tensors):
        return tensors
    scores = next(tensor for tensor in tensors if tensor.name() == score_name).as_numpy()[0]
    keep = scores > floor  # NaN scores are never above it
    return [pb_utils.Tensor(tensor.name(), np.ascontiguousarray(tensor.as_numpy()[:, keep])) for tensor in tensors]


def _empty_recheck(wiring):
    """Zero-row re-check outputs for a frame without tracklets: [1, 0, *row dims] each."""
    return [
        pb_utils.Tensor(name, np.zeros([1, 0] + wiring["recheck_row_dims"][name], np.float32))
        for name in wiring["recheck_outputs"]
    ]
