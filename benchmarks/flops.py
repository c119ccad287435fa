"""Floating-point operations of an ONNX graph, from ONNX shape inference.

Counted: the operators that carry the work of a convolutional network, each multiply-add as two
operations, biases and element-wise work left out (they are a few percent of a conv net and make
the count depend on fusion choices):

- Conv (and its INT8 forms QLinearConv, ConvInteger): 2 * B * Cout * Ho * Wo * (Cin / groups) * kh * kw.
- ConvTranspose: 2 * B * Cin * Hi * Wi * (Cout / groups) * kh * kw (every input pixel scatters
  a kernel).
- MatMul (QLinearMatMul, MatMulInteger): 2 * batch * M * K * N with NumPy broadcasting of the
  batch axes; Gemm: 2 * M * K * N.

INT8 graphs count the same operations as their float originals, so achieved rates compare.
Dynamic axes (the detector's batch B, the re-check's tracklet count n) are fixed to the values
given before shape inference. Nodes whose shapes inference could not resolve are counted as
unresolved (reported, never guessed).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omc.errors import BadInput, MissingDependency

log = logging.getLogger(__name__)

# Operator -> (input index of the data, input index of the weights).
CONV_OPS: dict[str, tuple[int, int]] = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
CONV_TRANSPOSE_OPS: dict[str, tuple[int, int]] = {"ConvTranspose": (0, 1)}
MATMUL_OPS: dict[str, tuple[int, int]] = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}
GEMM_OPS = ("Gemm",)
COUNTED_OPS = frozenset(CONV_OPS) | frozenset(CONV_TRANSPOSE_OPS) | frozenset(MATMUL_OPS) | frozenset(GEMM_OPS)

Shape = tuple[int, ...]


@dataclass(frozen=True)
class FlopCount:
    """Operations of one graph at fixed input shapes.

    total: floating-point (or integer, for INT8 graphs) operations, multiply-add = 2.
    by_op: operations per operator type. nodes: counted nodes per operator type.
    unresolved: names of counted-type nodes whose shapes were unknown (left out of total).
    """

    total: int
    by_op: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, int] = field(default_factory=dict)
    unresolved: tuple[str, ...] = ()

    @property
    def gflop(self) -> float:
        return self.total / 1e9

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "gflop": self.gflop,
            "by_op": dict(self.by_op),
            "nodes": dict(self.nodes),
            "unresolved": list(self.unresolved),
        }


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise MissingDependency("onnx", "export", "needed to count an ONNX graph's operations") from None
    return onnx


def _fix_inputs(model: Any, input_shapes: Mapping[str, Sequence[int]]) -> None:
    """Replace the graph inputs' dims by the given sizes (symbolic ones included), in place."""
    inputs = {value.name: value for value in model.graph.input}
    unknown = sorted(set(input_shapes) - set(inputs))
    if unknown:
        raise BadInput(f"graph has no input(s) {unknown}; its inputs are {sorted(inputs)}")
    for name, shape in input_shapes.items():
        dims = inputs[name].type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise BadInput(f"input '{name}' has {len(dims)} axes, got a shape of {len(shape)}: {list(shape)}")
        for dim, size in zip(dims, shape):
            dim.Clear()
            dim.dim_value = int(size)


def _shape_table(model: Any) -> dict[str, Shape]:
    """Every tensor name with a fully known shape -> that shape (inputs, outputs, values, weights)."""
    shapes: dict[str, Shape] = {}
    graph = model.graph
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        dims = tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(int(d.dim_value) for d in dims)
    for initializer in graph.initializer:
        shapes[initializer.name] = tuple(int(d) for d in initializer.dims)
    return shapes


def _attribute(node: Any, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(attribute.i)
    return default


def _input(node: Any, index: int, shapes: Mapping[str, Shape]) -> Shape | None:
    if index >= len(node.input) or not node.input[index]:
        return None
    return shapes.get(node.input[index])


def conv_flops(weight: Shape, output: Shape) -> int:
    """2 * B * Cout * spatial_out * (Cin / groups) * kernel; weight [Cout, Cin / groups, k...] (so
    grouped and depthwise convolutions need no group argument), output [B, Cout, ...]."""
    kernel = math.prod(weight[2:])
    return 2 * output[0] * output[1] * math.prod(output[2:]) * weight[1] * kernel


def conv_transpose_flops(data: Shape, weight: Shape) -> int:
    """2 * B * Cin * spatial_in * (Cout / groups) * kernel; data [B, Cin, ...], weight [Cin, Cout / groups, k...]."""
    kernel = math.prod(weight[2:])
    return 2 * data[0] * data[1] * math.prod(data[2:]) * weight[1] * kernel


def matmul_flops(a: Shape, b: Shape) -> int:
    """2 * batch * M * K * N of numpy.matmul(a, b) with broadcast batch axes (1-D operands promoted)."""
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    m, k, n = a2[-2], a2[-1], b2[-1]
    batch_a, batch_b = a2[:-2], b2[:-2]
    width = max(len(batch_a), len(batch_b))
    batch_a = (1,) * (width - len(batch_a)) + batch_a
    batch_b = (1,) * (width - len(batch_b)) + batch_b
    batch = math.prod(max(x, y) for x, y in zip(batch_a, batch_b))
    return 2 * batch * m * k * n


def gemm_flops(a: Shape, b: Shape, trans_a: int, trans_b: int) -> int:
    m, k = (a[1], a[0]) if trans_a else (a[0], a[1])
    n = b[0] if trans_b else b[1]
    return 2 * m * k * n


def _shapes(node: Any, indices: Sequence[int], shapes: Mapping[str, Shape]) -> list[Shape] | None:
    """Shapes of the node's inputs at `indices` (-1: its first output), or None when one is unknown."""
    found = [shapes.get(node.output[0]) if index < 0 else _input(node, index, shapes) for index in indices]
    return None if any(shape is None for shape in found) else [shape for shape in found if shape is not None]


def _node_flops(node: Any, shapes: Mapping[str, Shape]) -> int | None:
    """Operations of one counted node, or None when a shape it needs is unknown."""
    op = node.op_type
    if op in CONV_OPS:  # a convolution's count reads its weights and its output
        found = _shapes(node, (CONV_OPS[op][1], -1), shapes)
        return None if found is None else conv_flops(*found)
    if op in CONV_TRANSPOSE_OPS:
        found = _shapes(node, CONV_TRANSPOSE_OPS[op], shapes)
        return None if found is None else conv_transpose_flops(*found)
    if op in MATMUL_OPS:
        found = _shapes(node, MATMUL_OPS[op], shapes)
        return None if found is None else matmul_flops(*found)
    found = _shapes(node, (0, 1), shapes)
    if found is None:
        return None
    return gemm_flops(found[0], found[1], _attribute(node, "transA", 0), _attribute(node, "transB", 0))


def _load(model_or_path: Any) -> Any:
    onnx = _import_onnx()
    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path)
        if not path.is_file():
            raise BadInput(f"{path} not found; export the engines first (omc export)")
        return onnx.load(str(path), load_external_data=False)
    model = onnx.ModelProto()
    model.CopyFrom(model_or_path)
    return model


def _node_table(model_or_path: Any, input_shapes: Mapping[str, Sequence[int]]) -> tuple[Any, dict[int, int], list[str]]:
    """(shape-inferred model, counted node index -> operations, names of unresolved nodes)."""
    onnx = _import_onnx()
    model = _load(model_or_path)
    _fix_inputs(model, input_shapes)
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = _shape_table(inferred)
    per_node: dict[int, int] = {}
    unresolved: list[str] = []
    for index, node in enumerate(inferred.graph.node):
        if node.op_type not in COUNTED_OPS:
            continue
        flops = _node_flops(node, shapes)
        if flops is None:
            unresolved.append(node.name or f"{node.op_type}#{index}")
        else:
            per_node[index] = flops
    if unresolved:
        log.warning("%d node(s) with unknown shapes left out of the operation count: %s",
                    len(unresolved), ", ".join(unresolved[:5]))
    if any(node.op_type in ("If", "Loop", "Scan") for node in inferred.graph.node):
        log.warning("the graph has control-flow subgraphs; their operations are not counted")
    return inferred, per_node, unresolved


def count_flops(model_or_path: Any, input_shapes: Mapping[str, Sequence[int]]) -> FlopCount:
    """Operations of the graph (an onnx.ModelProto or a path) at the given input shapes.

    input_shapes: graph input name -> concrete shape; inputs not named keep their own (static)
    shapes. The model passed in is not modified. Nodes inside subgraphs (If, Loop) and local
    functions are not counted.
    """
    inferred, per_node, unresolved = _node_table(model_or_path, input_shapes)
    by_op: dict[str, int] = {}
    nodes: dict[str, int] = {}
    for index, flops in per_node.items():
        op = inferred.graph.node[index].op_type
        by_op[op] = by_op.get(op, 0) + flops
        nodes[op] = nodes.get(op, 0) + 1
    return FlopCount(sum(per_node.values()), by_op, nodes, tuple(unresolved))


def _ancestors(graph: Any, outputs: Sequence[str]) -> set[int]:
    """Indices of the nodes that any of `outputs` depends on."""
    producer = {name: index for index, node in enumerate(graph.node) for name in node.output}
    seen: set[int] = set()
    pending = [producer[name] for name in outputs if name in producer]
    while pending:
        index = pending.pop()
        if index in seen:
            continue
        seen.add(index)
        pending.extend(producer[name] for name in graph.node[index].input if name in producer)
    return seen


def exclusive_flops(model_or_path: Any, input_shapes: Mapping[str, Sequence[int]], outputs: Sequence[str]) -> int:
    """Operations of the nodes that only `outputs` need (no other graph output depends on them).

    E.g. the detector's `recheck_features` and `recheck_boxes`: the re-check network's frame-only
    part, which a CSTrack export would not compute.
    """
    inferred, per_node, _ = _node_table(model_or_path, input_shapes)
    graph = inferred.graph
    unknown = sorted(set(outputs) - {value.name for value in graph.output})
    if unknown:
        raise BadInput(f"graph has no output(s) {unknown}")
    others = [value.name for value in graph.output if value.name not in outputs]
    only = _ancestors(graph, outputs) - _ancestors(graph, others)
    return sum(flops for index, flops in per_node.items() if index in only)
