"""Small contract exports (fp32, fp16, INT8 Q/DQ) for the TensorRT tests, and folder helpers.

fp32 and fp16 are real `omc export`s of the small test network (tests/small_export.py: tiny
config, random weights, 320 x 192, K 1000, P 100, max batch 4, max tracklets 64), made once per
session and copied; "int8" is the fp32 export with a Q/DQ pair on the first convolution's input
and precision "int8" in export.json (enough for the builder's INT8 refusals). Every TensorRT
test takes its engines from `write_contract_export`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from omc import contract
from omc.contract import EngineMeta


def write_contract_export(out_dir: Path, precision: str = "fp32") -> EngineMeta:
    """A small export (detector.onnx, recheck.onnx, export.json) in `out_dir`.

    precision "fp32" / "fp16": the real small export of that precision; "int8": the fp32 export
    with a Q/DQ pair on the detector's first convolution input and precision "int8" in export.json.
    """
    from small_export import copy_export, small_export  # tests/ is on sys.path through its conftest.py

    copy_export(small_export("fp16" if precision == "fp16" else "fp32"), out_dir)
    meta = EngineMeta.load(out_dir)
    if precision == "int8":
        model = onnx.load(str(out_dir / contract.DETECTOR_ONNX))
        first_conv = next(node for node in model.graph.node if node.op_type == "Conv")
        _insert_qdq(out_dir / contract.DETECTOR_ONNX, first_conv.input[0])
        meta = replace(meta, precision="int8")
        (out_dir / contract.EXPORT_JSON).write_text(meta.to_json())
    return meta


def _rename_inputs(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


def _insert_qdq(path: Path, tensor: str) -> None:
    """Route `tensor` through QuantizeLinear -> DequantizeLinear (explicit INT8 quantisation)."""
    model = onnx.load(str(path))
    graph = model.graph
    _rename_inputs(graph, tensor, tensor + "_dq")
    graph.initializer.extend(
        [numpy_helper.from_array(np.array(1.0, np.float32), "q_scale"), numpy_helper.from_array(np.array(0, np.uint8), "q_zero")]
    )
    producer = next(i for i, node in enumerate(graph.node) if tensor in node.output)
    qdq = [
        helper.make_node("QuantizeLinear", [tensor, "q_scale", "q_zero"], [tensor + "_q"]),
        helper.make_node("DequantizeLinear", [tensor + "_q", "q_scale", "q_zero"], [tensor + "_dq"]),
    ]
    nodes = list(graph.node)
    nodes[producer + 1 : producer + 1] = qdq
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def copy_engines(source: Path, target: Path) -> Path:
    """Copy an engine folder (so a test can tamper with it); returns `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        shutil.copy(item, target / item.name)
    return target


def edit_sidecar(plan_path: Path, **changes: object) -> None:
    """Rewrite keys of `<plan>.json`."""
    sidecar = plan_path.with_name(plan_path.name + ".json")
    data = json.loads(sidecar.read_text())
    data.update(changes)
    sidecar.write_text(json.dumps(data))
