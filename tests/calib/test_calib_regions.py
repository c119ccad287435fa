"""Float regions found from a graph's shape (omc.calib.regions), on hand-built graphs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from omc.calib.regions import classify_nodes, name_nodes


def _conv(name: str, source: str, out: str, channels: tuple[int, int]) -> tuple[onnx.NodeProto, onnx.TensorProto]:
    weight = numpy_helper.from_array(np.ones((channels[1], channels[0], 1, 1), np.float32), f"{name}.w")
    return helper.make_node("Conv", [source, weight.name], [out], name=name), weight


def _detector_like() -> onnx.ModelProto:
    """x -> conv_a -> sigmoid_a -> conv_b -> {conv_head -> sigmoid_h -> topk, convT_head}; conv_b also -> conv_c (body)."""
    nodes, weights = [], []
    for name, source, out, ch in [("conv_a", "x", "a", (3, 4)), ("conv_b", "sa", "b", (4, 4)),
                                  ("conv_c", "b", "c", (4, 4)), ("conv_head", "c", "h", (4, 1))]:
        node, weight = _conv(name, source, out, ch)
        nodes.append(node)
        weights.append(weight)
    nodes.insert(1, helper.make_node("Sigmoid", ["a"], ["sa"], name="sigmoid_a"))
    deconv_weight = numpy_helper.from_array(np.ones((4, 1, 2, 2), np.float32), "deconv.w")
    weights.append(deconv_weight)
    nodes += [
        helper.make_node("ConvTranspose", ["b", "deconv.w"], ["d"], name="deconv_head", strides=[2, 2]),
        helper.make_node("Sigmoid", ["h"], ["sh"], name="sigmoid_h"),
        helper.make_node("Flatten", ["sh"], ["flat"]),  # unnamed: name_nodes names it
        helper.make_node("TopK", ["flat", "k"], ["scores", "rows"], name="topk"),
    ]
    weights.append(numpy_helper.from_array(np.array([3], np.int64), "k"))
    graph = helper.make_graph(
        nodes, "detector_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("rows", TensorProto.INT64, None),
         helper.make_tensor_value_info("d", TensorProto.FLOAT, None)],
        initializer=weights,
    )  # fmt: skip
    return helper.make_model(graph)


def test_heads_are_the_last_convolutions_and_the_tail_follows_them() -> None:
    model = _detector_like()
    name_nodes(model)
    regions = classify_nodes(model)
    assert regions.body == ("conv_a", "sigmoid_a", "conv_b", "conv_c")
    assert set(regions.head) == {"conv_head", "deconv_head"}
    assert set(regions.tail) == {"sigmoid_h", "Flatten_7", "topk"}
    assert regions.similarity == ()
    assert regions.kept_float(("head",)) == list(regions.head)
    assert regions.counts() == {"body": 4, "head": 2, "tail": 3, "similarity": 0}


def _recheck_like() -> onnx.ModelProto:
    """tracklets -> norm -> matmul(id map) -> reduce -> conv1 -> mul(features) -> conv2 -> sigmoid -> maxpool."""
    conv1, w1 = _conv("conv1", "ms", "c1", (1, 2))
    conv2, w2 = _conv("conv2", "mixed", "c2", (2, 2))
    head, w3 = _conv("conv_out", "c2", "c3", (2, 1))
    nodes = [
        helper.make_node("Reshape", ["id_embeddings", "shape"], ["flat_ids"], name="reshape_ids"),
        helper.make_node("LpNormalization", ["tracklets"], ["unit"], name="norm", axis=1),
        helper.make_node("Transpose", ["unit"], ["unit_t"], name="transpose", perm=[1, 0]),
        helper.make_node("MatMul", ["flat_ids", "unit_t"], ["cos"], name="similarity"),
        helper.make_node("ReduceSum", ["cos", "axes"], ["summed"], name="aggregate", keepdims=1),
        helper.make_node("Reshape", ["summed", "map_shape"], ["ms"], name="to_map"),
        conv1,
        helper.make_node("Mul", ["c1", "recheck_features"], ["mixed"], name="mix"),
        conv2, head,
        helper.make_node("Sigmoid", ["c3"], ["heat"], name="sigmoid"),
        helper.make_node("MaxPool", ["heat"], ["pooled"], name="peaks", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ]  # fmt: skip
    constants = [
        numpy_helper.from_array(np.array([16, 8], np.int64), "shape"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
        numpy_helper.from_array(np.array([1, 1, 4, 4], np.int64), "map_shape"),
    ]
    graph = helper.make_graph(
        nodes, "recheck_like",
        [helper.make_tensor_value_info("id_embeddings", TensorProto.FLOAT, [1, 4, 4, 8]),
         helper.make_tensor_value_info("recheck_features", TensorProto.FLOAT, [1, 2, 4, 4]),
         helper.make_tensor_value_info("tracklets", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, None)],
        initializer=[w1, w2, w3, *constants],
    )  # fmt: skip
    return helper.make_model(graph)


def test_similarity_runs_from_the_tracklets_to_the_first_convolution() -> None:
    regions = classify_nodes(_recheck_like())
    # reshape_ids reads no tracklet but only feeds the similarity: it belongs to it.
    assert regions.similarity == ("reshape_ids", "norm", "transpose", "similarity", "aggregate", "to_map")
    assert regions.body == ("conv1", "mix", "conv2")
    assert regions.head == ("conv_out",)
    assert regions.tail == ("sigmoid", "peaks")
