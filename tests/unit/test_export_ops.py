"""What the exported graphs are made of: operators, signature, metadata, precision, simplification;
and the graph pieces (omc.export.graphs, omc.export.precision) on hand-computed cases.

The exports are tests/small_export.py's (tiny config, random weights, 320 x 192, K 1000, P 100,
max batch 4, max tracklets 64), made once per session.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from small_export import SMALL_CONFIG, small_checkpoint, small_export  # tests/ is on sys.path

from omc import contract
from omc.contract import EngineMeta
from omc.export.graphs import centre_cells, normalise_images, suppress_non_peaks, top_candidates
from omc.export.onnx_export import export_engines, exporter_route
from omc.export.precision import CastTo, half_precision_network

pytestmark = pytest.mark.slow

# Operators the graphs may use, each parsed by TensorRT's ONNX parser with static shapes apart
# from B and n, and why the graphs need it. Anything else fails the test: in particular
# NonZero / NonMaxSuppression / Loop / If / Scan (data-dependent shapes or control flow) and
# adaptive pooling (CCN's pool is two constant MatMuls instead).
ALLOWED_OPS = {
    "Conv": "every convolution of the network",
    "ConvTranspose": "SAAN / DenseMask / re-check up-sampling (grouped, constant weights)",
    "MatMul": "CCN pooling matrices and affinities, SAAN's Linear, tracklet similarity",
    "Add": "residuals, biases, box corners", "Sub": "centre offsets, corners", "Mul": "SiLU, attention, scaling",
    "Div": "/255, L2 and max normalisation, centre cells",
    "Sigmoid": "SiLU, heads", "LeakyRelu": "CCN and SAAN branches", "Softmax": "CCN affinities",
    "InstanceNormalization": "CCN branches", "LayerNormalization": "SAAN channel attention",
    "MaxPool": "SPP and the 3x3 peak suppression",
    "ReduceMean": "SAAN average pooling", "ReduceMax": "SAAN max pooling, max(Ms)",
    "ReduceSum": "sum of the windowed similarity maps", "ReduceL2": "L2 normalisation",
    "Resize": "the neck's nearest-neighbour up-sampling (constant scale)",
    "Concat": "layer joins, corners", "Slice": "Focus phases, BGR->RGB, column picks",
    "Reshape": "flattening maps", "Transpose": "NHWC <-> NCHW", "Unsqueeze": "broadcast axes",
    "Expand": "gather indices over the embedding axis",
    "Gather": "constant-index column picks", "GatherElements": "centre-cell and peak gathers",
    "TopK": "top-K candidates and top-P peaks, constant K",
    "Cast": "uint8 input, fp16 boundaries, int64 indices", "Floor": "centre cells", "Clip": "cell clipping, eps guards",
    "ArgMax": "shrink-window centres", "Mod": "window centre column",
    "Equal": "peak suppression, NaN centres (x == x)", "Less": "window mask", "GreaterOrEqual": "window mask", "And": "window mask",
    "Where": "peak suppression, NaN centres to cell 0",
}  # fmt: skip
# The TorchScript route (opset 17) additionally writes these (also parsed by TensorRT with static
# shapes apart from B): Shape for reshapes over the dynamic batch, Flatten, and boolean Not / Xor
# of the window mask.
TORCHSCRIPT_EXTRA_OPS = {"Shape", "Flatten", "Not", "Xor"}
ENGINES = ((contract.DETECTOR_ONNX, "detector"), (contract.RECHECK_ONNX, "recheck"))


def load(precision: str, name: str) -> onnx.ModelProto:
    return onnx.load(str(small_export(precision) / name))


def dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param if d.dim_param else d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", [contract.DETECTOR_ONNX, contract.RECHECK_ONNX])
def test_graphs_use_only_allowed_operators_and_pass_the_full_check(precision: str, name: str) -> None:
    model = load(precision, name)
    used = {node.op_type for node in model.graph.node}
    assert used - set(ALLOWED_OPS) == set(), f"{name}: operators outside the allow-list"
    assert {node.domain for node in model.graph.node} <= {""}
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 18)]
    onnx.checker.check_model(model, full_check=True)
    # TopK's K is a constant: K = 1000 in the detector, P = 100 in the re-check.
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    (topk,) = [node for node in model.graph.node if node.op_type == "TopK"]
    expected = SMALL_CONFIG.topk if name == contract.DETECTOR_ONNX else SMALL_CONFIG.peaks
    assert initializers[topk.input[1]].tolist() == [expected]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_signature_is_the_contract_with_only_b_and_n_dynamic(precision: str) -> None:
    meta = EngineMeta.load(small_export(precision))
    float32, uint8 = TensorProto.FLOAT, TensorProto.UINT8
    for name, engine in ENGINES:
        model = load(precision, name)
        specs_in = meta.detector_inputs() if engine == "detector" else meta.recheck_inputs()
        specs_out = meta.detector_outputs() if engine == "detector" else meta.recheck_outputs()
        assert [v.name for v in model.graph.input] == list(specs_in)
        assert [v.name for v in model.graph.output] == list(specs_out)
        for value in list(model.graph.input) + list(model.graph.output):
            spec = {**specs_in, **specs_out}[value.name]
            assert dims(value) == list(spec.shape), value.name
            assert value.type.tensor_type.elem_type == (uint8 if value.name == contract.IMAGES else float32)
        symbols = {d for v in list(model.graph.input) + list(model.graph.output) for d in dims(v) if isinstance(d, str)}
        assert symbols == ({"B"} if engine == "detector" else {"n"})
    # Spelled out for the default small export: 320 x 192 -> 24 x 40 maps, C = 32.
    detector = load("fp32", contract.DETECTOR_ONNX)
    assert dims(detector.graph.input[0]) == ["B", 192, 320, 3]
    assert dims(detector.graph.output[5]) == ["B", 32, 24, 40]
    recheck = load("fp32", contract.RECHECK_ONNX)
    assert dims(recheck.graph.input[3]) == ["n", 512]
    assert dims(recheck.graph.output[0]) == [1, 100, 4]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_metadata_props_hold_export_json(precision: str) -> None:
    folder = small_export(precision)
    expected = json.loads((folder / contract.EXPORT_JSON).read_text())
    for name, _ in ENGINES:
        props = {p.key: json.loads(p.value) for p in load(precision, name).metadata_props}
        assert props == expected
    meta = EngineMeta.load(folder)
    assert meta.precision == precision and meta.opset == 18
    assert (meta.input_hw, meta.topk, meta.peaks, meta.max_batch, meta.max_tracklets) == ((192, 320), 1000, 100, 4, 64)
    assert (meta.recheck_channels, meta.embedding_dim, meta.strides, meta.has_recheck) == (32, 512, (8, 16, 32), True)
    assert (meta.shrink_radius, meta.shrink_window, meta.global_point) == (3, "reference", True)
    assert meta.checkpoint_sha256 == "" and meta.variant == "custom"
    assert meta.extra["source"]["kind"] == "random" and meta.extra["source"]["seed"] == 0
    assert meta.extra["exporter"]["route"] == "dynamo"


@pytest.mark.parametrize("name", [contract.DETECTOR_ONNX, contract.RECHECK_ONNX])
def test_graphs_are_simplified(name: str) -> None:
    model = load("fp32", name)
    graph = model.graph
    consumed = {i for node in graph.node for i in node.input} | {o.name for o in graph.output}
    dead = [node.name for node in graph.node if not any(o in consumed for o in node.output)]
    assert dead == []
    constant = {t.name for t in graph.initializer}
    foldable = [n.name for n in graph.node if n.input and all(i in constant for i in n.input if i)]
    assert foldable == []
    assert not any(node.op_type in ("Constant", "Identity") for node in graph.node)
    unused = constant - {i for node in graph.node for i in node.input}
    assert unused == set()


def test_fp16_graphs_compute_in_half_with_float32_coordinates() -> None:
    for name, engine in ENGINES:
        model = load("fp16", name)
        initializers = {t.name: t for t in model.graph.initializer}
        conv_types = [initializers[n.input[1]].data_type for n in model.graph.node if n.op_type == "Conv"]
        float32_convs = conv_types.count(TensorProto.FLOAT)
        # Detector: only Detect's three 1x1 convs and the re-check box head's last conv stay float32.
        assert float32_convs == (4 if engine == "detector" else 0)
        assert conv_types.count(TensorProto.FLOAT16) == len(conv_types) - float32_convs > 0
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input]}
        types.update({t.name: t.data_type for t in model.graph.initializer})
        (topk,) = [node for node in model.graph.node if node.op_type == "TopK"]
        assert types[topk.input[0]] == TensorProto.FLOAT  # scores / heat ranked in float32
        # No float32 matrix multiply (TensorRT for RTX refuses those on Turing).
        matmul_inputs = [types[i] for n in model.graph.node if n.op_type == "MatMul" for i in n.input]
        assert matmul_inputs and set(matmul_inputs) == {TensorProto.FLOAT16}


def test_opset_17_uses_the_torchscript_route(tmp_path: Path) -> None:
    from dataclasses import replace

    assert exporter_route(17) == "torchscript" and exporter_route(18) == exporter_route(21) == "dynamo"
    out = tmp_path / "opset17"
    result = export_engines(small_checkpoint(), replace(SMALL_CONFIG, opset=17), out, seed=0)
    assert result.meta.extra["exporter"]["route"] == "torchscript"
    for name, _ in ENGINES:
        model = onnx.load(str(out / name))
        assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
        onnx.checker.check_model(model, full_check=True)
        assert {n.op_type for n in model.graph.node} - set(ALLOWED_OPS) - TORCHSCRIPT_EXTRA_OPS == set()
        assert dims(model.graph.output[0]) == (["B", 1000, 4] if name == contract.DETECTOR_ONNX else [1, 100, 4])


# --- graph pieces on hand-computed cases -------------------------------------------------------------


def test_normalise_images_flips_to_rgb_scales_and_goes_nchw() -> None:
    images = torch.tensor([[[[10, 20, 255], [0, 51, 102]]]], dtype=torch.uint8)  # [1, 1, 2, 3] BGR
    out = normalise_images(images, torch.float32)
    assert out.shape == (1, 3, 1, 2)
    # Pixel 0 is B 10, G 20, R 255 -> RGB (1.0, 20/255, 10/255).
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([1.0, 20 / 255, 10 / 255]))
    torch.testing.assert_close(out[0, :, 0, 1], torch.tensor([102 / 255, 51 / 255, 0.0]))
    assert normalise_images(images, torch.float16).dtype == torch.float16


def test_centre_cells_floor_and_clip_to_the_map() -> None:
    # Map 4 rows x 5 cols at stride 8. (x1 + x2) / 16 = col before the floor.
    corners = torch.tensor([
        [0.0, 0.0, 16.0, 16.0],     # centre (8, 8): col 1, row 1 -> 1 * 5 + 1 = 6
        [7.9, 0.0, 8.0, 0.0],       # (7.9 + 8) / 16 = 0.99 -> col 0, row 0 -> 0
        [-40.0, -40.0, -8.0, 2.0],  # left of / above the image -> clipped to col 0, row 0
        [70.0, 60.0, 90.0, 90.0],   # col floor(160 / 16) = 10 -> 4, row floor(150 / 16) = 9 -> 3: 3 * 5 + 4 = 19
    ])  # fmt: skip
    assert centre_cells(corners, 8, (4, 5)).tolist() == [6, 0, 0, 19]


def test_top_candidates_rank_by_obj_times_cls_and_return_corners() -> None:
    # (cx, cy, w, h, obj, cls): scores 0.5 * 0.5 = 0.25, 0.9 * 0.5 = 0.45, 0.6 * 1.0 = 0.6.
    candidates = torch.tensor([[[10.0, 10.0, 4.0, 2.0, 0.5, 0.5],
                                [20.0, 30.0, 2.0, 2.0, 0.9, 0.5],
                                [5.0, 5.0, 10.0, 6.0, 0.6, 1.0]]])  # fmt: skip
    corners, scores = top_candidates(candidates, 2)
    torch.testing.assert_close(scores, torch.tensor([[0.6, 0.45]]))
    torch.testing.assert_close(corners, torch.tensor([[[0.0, 2.0, 10.0, 8.0], [19.0, 29.0, 21.0, 31.0]]]))


def test_peak_suppression_keeps_local_maxima_and_plateaus() -> None:
    heat = torch.tensor([[[[0.1, 0.2, 0.1, 0.0],
                           [0.2, 0.9, 0.3, 0.5],
                           [0.1, 0.3, 0.2, 0.5]]]])  # fmt: skip
    kept = suppress_non_peaks(heat)
    # 0.9 is its 3x3 maximum; the two 0.5 cells tie as each other's maximum: both stay.
    expected = torch.zeros_like(heat)
    expected[0, 0, 1, 1], expected[0, 0, 1, 3], expected[0, 0, 2, 3] = 0.9, 0.5, 0.5
    torch.testing.assert_close(kept, expected)


def test_half_precision_network_keeps_coordinate_islands_in_float32() -> None:
    network = small_checkpoint().network
    before = {k: v.clone() for k, v in network.state_dict().items()}
    half = half_precision_network(network)
    detect = half.model.detect
    assert detect.k.dtype == detect.anchor_grid.dtype == torch.float32
    assert all(isinstance(m[0], CastTo) and m[1].weight.dtype == torch.float32 for m in detect.m)
    assert half.siambox is not None
    last = half.siambox.conv_box[len(half.siambox.conv_box) - 1]
    assert isinstance(last[0], CastTo) and last[1].weight.dtype == torch.float32
    assert half.model.model[0].conv.conv.weight.dtype == torch.float16
    assert half.siamheatmap is not None and half.siamheatmap.conv2[0].conv.weight.dtype == torch.float16
    # The islands hold the original float32 values; the original network is untouched.
    torch.testing.assert_close(detect.k, network.model.detect.k)
    assert all(torch.equal(before[k], v) and v.dtype == before[k].dtype for k, v in network.state_dict().items())
    assert not any(p.requires_grad for p in half.parameters()) and not half.training
    # An all-zero tracklet in half precision: no 0 / 0 (the eps guard is 1e-4 there, not 1e-12).
    h, w = half.map_hw
    id_unit = torch.nn.functional.normalize(torch.randn(1, h, w, 512), dim=-1).half()
    aggregated = half.aggregate_similarity(id_unit, torch.zeros(2, 512, dtype=torch.float16), 3)
    assert torch.isfinite(aggregated).all() and aggregated.abs().max() == 0
    assert np.isfinite(aggregated.float().numpy()).all()


def test_a_checkpoint_without_recheck_exports_the_cstrack_detector_only(tmp_path: Path) -> None:
    """A stage-1 (CSTrack) checkpoint: no recheck.onnx, the detector's first five outputs only,
    still inside the operator allow-list, and ONNX Runtime runs it."""
    import onnxruntime as ort

    from omc.export.checkpoint import random_checkpoint

    arch = small_checkpoint().architecture
    width, height = SMALL_CONFIG.img_size
    loaded = random_checkpoint(arch, seed=1, with_recheck=False, input_hw=(height, width))
    result = export_engines(loaded, SMALL_CONFIG, tmp_path, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [contract.DETECTOR_ONNX, contract.EXPORT_JSON]
    assert not result.meta.has_recheck
    model = onnx.load(str(tmp_path / contract.DETECTOR_ONNX))
    assert [o.name for o in model.graph.output] == list(contract.DETECTOR_CORE_OUTPUTS)
    assert {node.op_type for node in model.graph.node} - set(ALLOWED_OPS) == set()
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(str(tmp_path / contract.DETECTOR_ONNX), providers=["CPUExecutionProvider"])
    images = np.zeros((1, height, width, 3), np.uint8)
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {contract.IMAGES: images})))
    assert outputs[contract.DET_BOXES].shape == (1, SMALL_CONFIG.topk, 4)
    assert outputs[contract.ID_EMBEDDINGS].shape[1:3] == (height // 8, width // 8)
