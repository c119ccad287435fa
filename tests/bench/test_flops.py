"""The ONNX operation counter against hand-computed one-node graphs (omc.benchmarks.flops)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from omc.benchmarks.flops import count_flops, exclusive_flops, matmul_flops
from omc.errors import BadInput

OPSET = [helper.make_opsetid("", 18)]


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[str],
           weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        [numpy_helper.from_array(value.astype(np.float32), name) for name, value in weights.items()],
    )
    return helper.make_model(graph, opset_imports=OPSET)


def _input(name: str, shape: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_one_conv_counts_two_cin_cout_k2_ho_wo() -> None:
    # Conv 3 -> 8 channels, 3x3 kernel, pad 1 on 32x32: 2 * Cin * Cout * k * k * Ho * Wo
    # = 2 * 3 * 8 * 9 * 32 * 32 = 442368.
    model = _model(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        [_input("x", ["B", 3, 32, 32])], ["y"], {"w": np.zeros((8, 3, 3, 3))},
    )
    count = count_flops(model, {"x": [1, 3, 32, 32]})
    assert count.total == 2 * 3 * 8 * 3 * 3 * 32 * 32 == 442368
    assert count.nodes == {"Conv": 1}
    # The batch axis multiplies; stride 2 without padding gives 15 x 15 outputs.
    assert count_flops(model, {"x": [4, 3, 32, 32]}).total == 4 * 442368
    strided = _model(
        [helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2])],
        [_input("x", [1, 3, 32, 32])], ["y"], {"w": np.zeros((8, 3, 3, 3))},
    )
    assert count_flops(strided, {}).total == 2 * 3 * 8 * 9 * 15 * 15


def test_grouped_conv_and_transposed_conv() -> None:
    # Depthwise 3x3 over 16 channels (weight [16, 1, 3, 3]) on 8x8 with pad 1: 2 * 16 * 1 * 9 * 64 = 18432.
    depthwise = _model(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], group=16)],
        [_input("x", [1, 16, 8, 8])], ["y"], {"w": np.zeros((16, 1, 3, 3))},
    )
    assert count_flops(depthwise, {}).total == 2 * 16 * 9 * 64
    # ConvTranspose 4 -> 2 channels, kernel 4, stride 2, pad 1 on 5x6 input: every input pixel
    # scatters Cout * k * k: 2 * Cin * Hi * Wi * Cout * 16 = 2 * 4 * 30 * 2 * 16 = 7680.
    transposed = _model(
        [helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])],
        [_input("x", [1, 4, 5, 6])], ["y"], {"w": np.zeros((4, 2, 4, 4))},
    )
    assert count_flops(transposed, {}).total == 7680


def test_matmul_and_gemm() -> None:
    # [n, 512] x [512, 100]: 2 * n * 512 * 100 with the dynamic n fixed to 50.
    model = _model(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        [_input("a", ["n", 512])], ["c"], {"b": np.zeros((512, 100))},
    )
    assert count_flops(model, {"a": [50, 512]}).total == 2 * 50 * 512 * 100
    # Broadcast batch axes: [3, 1, 4, 5] x [2, 5, 6] -> batch 3 * 2, 4 x 5 x 6.
    assert matmul_flops((3, 1, 4, 5), (2, 5, 6)) == 2 * 6 * 4 * 5 * 6
    assert matmul_flops((5,), (5, 6)) == 2 * 5 * 6
    gemm = _model(
        [helper.make_node("Gemm", ["a", "b"], ["c"], transB=1)],
        [_input("a", [7, 9])], ["c"], {"b": np.zeros((11, 9))},
    )
    assert count_flops(gemm, {}).total == 2 * 7 * 9 * 11


def test_exclusive_flops_counts_only_what_one_output_needs() -> None:
    # x -> conv_a -> y (shared) -> conv_b -> out_b ; y -> conv_c -> out_c. Only conv_c is exclusive to out_c.
    model = _model(
        [
            helper.make_node("Conv", ["x", "wa"], ["y"]),
            helper.make_node("Conv", ["y", "wb"], ["out_b"]),
            helper.make_node("Conv", ["y", "wc"], ["out_c"]),
        ],
        [_input("x", [1, 2, 4, 4])], ["out_b", "out_c"],
        {"wa": np.zeros((3, 2, 1, 1)), "wb": np.zeros((1, 3, 1, 1)), "wc": np.zeros((5, 3, 1, 1))},
    )
    assert count_flops(model, {}).total == 2 * 16 * (2 * 3 + 3 * 1 + 3 * 5)
    assert exclusive_flops(model, {}, ["out_c"]) == 2 * 16 * 3 * 5
    with pytest.raises(BadInput, match="no output"):
        exclusive_flops(model, {}, ["missing"])


def test_unknown_input_name_is_refused() -> None:
    model = _model([helper.make_node("MatMul", ["a", "b"], ["c"])], [_input("a", [2, 2])], ["c"], {"b": np.zeros((2, 2))})
    with pytest.raises(BadInput, match="no input"):
        count_flops(model, {"images": [1, 2]})
