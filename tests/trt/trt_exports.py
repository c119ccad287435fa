"""Small contract exports (fp32, fp16, INT8 Q/DQ) for the TensorRT tests, and folder helpers.

The exports come from `tests/toy_engines.py` (contract-conforming graphs built with onnx.helper).
When `omc export` can write the small real model, switch `write_contract_export` to it: every
TensorRT test takes its engines from that one function.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from omc import contract
from omc.contract import EngineMeta


def write_contract_export(out_dir: Path, precision: str = "fp32") -> EngineMeta:
    """A small export (detector.onnx, recheck.onnx, export.json) in `out_dir`.

    precision "fp32": the toy graphs as written; "fp16": the same graphs computing in half
    precision with float32 at the contract boundary; "int8": fp32 graphs with a Q/DQ pair on the
    detector's pixels and precision "int8" in export.json.
    """
    from toy_engines import write_toy_engines  # tests/ is on sys.path through its conftest.py

    meta = write_toy_engines(out_dir)
    if precision == "fp16":
        for name in (contract.DETECTOR_ONNX, contract.RECHECK_ONNX):
            _convert_to_fp16(out_dir / name)
    elif precision == "int8":
        _insert_qdq(out_dir / contract.DETECTOR_ONNX, "pixels")
    if precision != "fp32":
        meta = replace(meta, precision=precision)
        (out_dir / contract.EXPORT_JSON).write_text(meta.to_json())
    return meta


def _rename_inputs(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


def _convert_to_fp16(path: Path) -> None:
    """Make a toy graph compute in float16 while its inputs and outputs stay float32 (the
    contract's boundary): fp16 initializers, casts after float inputs and before outputs."""
    model = onnx.load(str(path))
    graph = model.graph
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type == TensorProto.FLOAT:
            half = numpy_helper.to_array(tensor).astype(np.float16)
            graph.initializer[index].CopyFrom(numpy_helper.from_array(half, tensor.name))
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.FLOAT16
    head = []
    for value in graph.input:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            _rename_inputs(graph, value.name, value.name + "_fp16")
            head.append(helper.make_node("Cast", [value.name], [value.name + "_fp16"], to=TensorProto.FLOAT16))
    tail = []
    for value in graph.output:
        internal = value.name + "_fp16"
        for node in graph.node:
            node.output[:] = [internal if name == value.name else name for name in node.output]
        _rename_inputs(graph, value.name, internal)
        tail.append(helper.make_node("Cast", [internal], [value.name], to=TensorProto.FLOAT))
    nodes = head + list(graph.node) + tail
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


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
