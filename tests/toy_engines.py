"""Small contract-conforming ONNX engines for tests that need files before a real export exists.

`write_toy_engines(out_dir)` writes `detector.onnx`, `recheck.onnx` (optional) and `export.json`
whose tensor names, dtypes, shapes and dynamic axes are exactly those of `omc.contract`
(engine-contract.md), at a small input size so they load and run in milliseconds. They carry no
learned weights: every output is a fixed, documented function of the inputs, so tests can
predict what a runtime must see.

detector (images uint8 [B, H, W, 3]):
- `det_scores` [B, K]: a descending table (TOY_SCORES, padded with 0) times (0.5 + mean pixel /
  255), capped at 1. A mid-grey frame (mean 127.5) gives the table itself; a black frame halves
  it. Order never changes because the factor is one positive scalar per image.
- `det_boxes` [B, K, 4]: a fixed table of corners (network pixels) shifted right by
  (mean / 255 - 0.5) * TOY_BOX_SHIFT_PX, so brighter frames move every box.
- `det_density` [B, K]: a fixed table.
- `det_embeddings` [B, K, E]: the `id_embeddings` row at each candidate's centre cell.
- `id_embeddings` [B, h, w, E]: unit code vectors; cell (r, c) holds code (r // 4 * 7 + c // 4) % G.
- `recheck_features` [B, C, h, w]: 8x8 average pool of the image through a fixed 1x1 conv.
- `recheck_boxes` [B, h, w, 4]: a box of TOY_CELL_BOX_HW centred on each cell.

recheck (id_embeddings, recheck_features, recheck_boxes, tracklets [n, E]):
- `recheck_heatmap` [1, 1, h, w] = sigmoid(4 * max_n(<id_embeddings, tracklet_n>) + 0.01 * mean_C(features)
  + bump - 2): the best match over all tracklets, so n and the tracklets' content change it; `bump`
  puts one peak at the centre of each 4x4 code block (the blocks of one code tie-break by position).
- 3x3 peak suppression, top P: `trans_scores` [1, P], `trans_boxes` [1, P, 4] and
  `trans_embeddings` [1, P, E] read at the peak cells.

Both files carry export.json's keys in their ONNX metadata (each key, its JSON value).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from omc import contract
from omc.contract import EngineMeta, TensorSpec

# Default toy export: 320 x 192 input (40 x 24 stride-8 maps), K 32, P 16, C 8, E 512.
TOY_META = EngineMeta(
    input_hw=(192, 320),
    topk=32,
    peaks=16,
    embedding_dim=512,
    recheck_channels=8,
    has_recheck=True,
    max_batch=4,
    max_tracklets=64,
    opset=18,
    variant="toy",
    exporter_version="toy-engines",
)
# Scores of the real candidates (descending); the rest of the K rows are padding (score 0).
TOY_SCORES = (0.92, 0.88, 0.81, 0.74, 0.66, 0.55, 0.45, 0.35, 0.2)
# Pixel shift of every detector box per unit of (mean / 255 - 0.5).
TOY_BOX_SHIFT_PX = 16.0
# Number of distinct embedding codes in the id map.
TOY_CODES = 8
# (height, width) in network pixels of the box each re-check cell proposes.
TOY_CELL_BOX_HW = (48.0, 24.0)


def _value_info(spec: TensorSpec) -> onnx.ValueInfoProto:
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype))
    return helper.make_tensor_value_info(spec.name, elem, list(spec.shape))


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def _unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    codes = rng.standard_normal((rows, dim)).astype(np.float32)
    return codes / np.linalg.norm(codes, axis=1, keepdims=True)


def _toy_tables(meta: EngineMeta, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The constant tables both graphs are built from (all float32 unless said)."""
    height, width = meta.input_hw
    h, w = meta.map_hw
    k = meta.topk
    codes = _unit_rows(rng, TOY_CODES, meta.embedding_dim)
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    code_of_cell = (rows // 4 * 7 + cols // 4) % TOY_CODES  # [h, w]
    id_map = codes[code_of_cell]  # [h, w, E]

    real = min(len(TOY_SCORES), k)
    scores = np.zeros(k, np.float32)
    scores[:real] = TOY_SCORES[:real]
    # Boxes about 1/4 of the frame high, spread over the frame, away from the borders.
    box_h, box_w = height / 4.0, width / 10.0
    cx = rng.uniform(box_w, width - box_w, k)
    cy = rng.uniform(box_h, height - box_h, k)
    boxes = np.stack([cx - box_w / 2, cy - box_h / 2, cx + box_w / 2, cy + box_h / 2], axis=1).astype(np.float32)
    boxes[real:] = 0.0
    density = rng.uniform(0.0, 0.9, k).astype(np.float32)
    density[real:] = 0.0
    # Centre cell of each box as the contract defines it (unshifted, i.e. for a mid-grey frame).
    cell_col = np.clip(np.floor((boxes[:, 0] + boxes[:, 2]) / 16), 0, w - 1).astype(np.int64)
    cell_row = np.clip(np.floor((boxes[:, 1] + boxes[:, 3]) / 16), 0, h - 1).astype(np.int64)
    det_embeddings = id_map[cell_row, cell_col]

    cell_cx = (np.arange(w, dtype=np.float32) + 0.5) * 8
    cell_cy = (np.arange(h, dtype=np.float32) + 0.5) * 8
    gy, gx = np.meshgrid(cell_cy, cell_cx, indexing="ij")
    bh, bw = TOY_CELL_BOX_HW
    cell_boxes = np.stack([gx - bw / 2, gy - bh / 2, gx + bw / 2, gy + bh / 2], axis=-1).astype(np.float32)
    conv = rng.uniform(-1.0, 1.0, (max(meta.recheck_channels, 1), 3, 1, 1)).astype(np.float32)
    return {
        "scores": scores,
        "boxes": boxes,
        "density": density,
        "det_embeddings": det_embeddings.astype(np.float32),
        "id_map": id_map.astype(np.float32),
        "cell_boxes": cell_boxes,
        "conv": conv,
    }


def _detector_graph(meta: EngineMeta, tables: dict[str, np.ndarray]) -> onnx.GraphProto:
    h, w = meta.map_hw
    k, e = meta.topk, meta.embedding_dim
    f32 = np.float32
    inits = [
        _const("score_table", tables["scores"][None, :]),  # [1, K]
        _const("box_table", tables["boxes"][None]),  # [1, K, 4]
        _const("density_table", tables["density"][None, :]),
        _const("det_embedding_table", tables["det_embeddings"][None]),  # [1, K, E]
        _const("id_map", tables["id_map"][None]),  # [1, h, w, E]
        _const("cell_box_table", tables["cell_boxes"][None]),  # [1, h, w, 4]
        _const("conv_w", tables["conv"]),
        _const("mean_axes", np.array([1, 2, 3], np.int64)),
        _const("c255", np.array(255.0, f32)),
        _const("c_half", np.array(0.5, f32)),
        _const("c_one", np.array(1.0, f32)),
        _const("c_shift", np.array(TOY_BOX_SHIFT_PX, f32)),
        _const("x_mask", np.array([1.0, 0.0, 1.0, 0.0], f32)),
        _const("shape_b1", np.array([-1, 1], np.int64)),
        _const("shape_b11", np.array([-1, 1, 1], np.int64)),
        _const("zeros_k", np.zeros((1, k), f32)),
        _const("zeros_ke", np.zeros((1, k, e), f32)),
        _const("zeros_hwe", np.zeros((1, h, w, e), f32)),
        _const("zeros_hw4", np.zeros((1, h, w, 4), f32)),
    ]
    nodes = [
        helper.make_node("Cast", ["images"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["pixels", "mean_axes"], ["mean_b111"], keepdims=1),
        helper.make_node("Div", ["mean_b111", "c255"], ["bright_b111"]),
        helper.make_node("Reshape", ["bright_b111", "shape_b1"], ["bright_b1"]),
        # Zero tensors of the batch size, so constants broadcast to [B, ...].
        helper.make_node("Mul", ["bright_b1", "zeros_k"], ["zero_bk"]),
        # scores = min(table * (0.5 + brightness), 1)
        helper.make_node("Add", ["bright_b1", "c_half"], ["factor_b1"]),
        helper.make_node("Mul", ["score_table", "factor_b1"], ["raw_scores"]),
        helper.make_node("Min", ["raw_scores", "c_one"], ["det_scores"]),
        # boxes = table + (brightness - 0.5) * shift on x1 and x2; padding rows stay where scores are 0.
        helper.make_node("Sub", ["bright_b1", "c_half"], ["offset_b1"]),
        helper.make_node("Mul", ["offset_b1", "c_shift"], ["shift_b1"]),
        helper.make_node("Reshape", ["shift_b1", "shape_b11"], ["shift_b11"]),
        helper.make_node("Mul", ["shift_b11", "x_mask"], ["shift_b14"]),
        helper.make_node("Add", ["box_table", "shift_b14"], ["det_boxes"]),
        helper.make_node("Add", ["density_table", "zero_bk"], ["det_density"]),
        helper.make_node("Reshape", ["bright_b1", "shape_b11"], ["bright_b11"]),
        helper.make_node("Mul", ["bright_b11", "zeros_ke"], ["zero_bke"]),
        helper.make_node("Add", ["det_embedding_table", "zero_bke"], ["det_embeddings"]),
        helper.make_node("Unsqueeze", ["bright_b11", "unsq_axis"], ["bright_b111_id"]),
        helper.make_node("Mul", ["bright_b111_id", "zeros_hwe"], ["zero_bhwe"]),
        helper.make_node("Add", ["id_map", "zero_bhwe"], ["id_embeddings"]),
    ]
    inits.append(_const("unsq_axis", np.array([3], np.int64)))
    outputs = [contract.DET_BOXES, contract.DET_SCORES, contract.DET_DENSITY, contract.DET_EMBEDDINGS, contract.ID_EMBEDDINGS]
    if meta.has_recheck:
        nodes += [
            helper.make_node("Transpose", ["pixels"], ["pixels_nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("AveragePool", ["pixels_nchw"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
            helper.make_node("Conv", ["pooled", "conv_w"], ["conv_out"]),
            helper.make_node("Div", ["conv_out", "c255"], [contract.RECHECK_FEATURES]),
            helper.make_node("Mul", ["bright_b111_id", "zeros_hw4"], ["zero_bhw4"]),
            helper.make_node("Add", ["cell_box_table", "zero_bhw4"], [contract.RECHECK_BOXES]),
        ]
        outputs += [contract.RECHECK_FEATURES, contract.RECHECK_BOXES]
    specs_in = meta.detector_inputs()
    specs_out = meta.detector_outputs()
    graph = helper.make_graph(
        nodes,
        "omc_toy_detector",
        [_value_info(specs_in[contract.IMAGES])],
        [_value_info(specs_out[name]) for name in outputs],
        initializer=inits,
    )
    return graph


def _peak_bump(h: int, w: int) -> np.ndarray:
    """[1, 1, h, w] logit offset that gives each 4x4 code block one peak, at its centre cell
    (row 4i + 2, col 4j + 2), minus a tiny per-block term so equal blocks never tie."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    off_centre = np.abs(rows % 4 - 2) + np.abs(cols % 4 - 2)
    block = rows // 4 * ((w + 3) // 4) + cols // 4
    bump = -0.1 * off_centre - 1e-3 * block
    return bump.astype(np.float32)[None, None]


def _recheck_graph(meta: EngineMeta) -> onnx.GraphProto:
    h, w = meta.map_hw
    e, p = meta.embedding_dim, meta.peaks
    f32 = np.float32
    inits = [
        _const("shape_cells_e", np.array([h * w, e], np.int64)),
        _const("shape_cells_4", np.array([h * w, 4], np.int64)),
        _const("shape_map", np.array([1, 1, h, w], np.int64)),
        _const("shape_flat", np.array([1, h * w], np.int64)),
        _const("axis1", np.array([1], np.int64)),
        _const("bump", _peak_bump(h, w)),
        _const("k_peaks", np.array([p], np.int64)),
        _const("c_gain", np.array(4.0, f32)),
        _const("c_feat", np.array(0.01, f32)),
        _const("c_bias", np.array(-2.0, f32)),
        _const("c_zero", np.array(0.0, f32)),
    ]
    nodes = [
        helper.make_node("Reshape", [contract.ID_EMBEDDINGS, "shape_cells_e"], ["cells_e"]),  # [hw, E]
        helper.make_node("MatMul", ["cells_e", "tracklets_t"], ["similarity"]),  # [hw, n]
        helper.make_node("Transpose", [contract.TRACKLETS], ["tracklets_t"], perm=[1, 0]),
        helper.make_node("ReduceMax", ["similarity", "axis1"], ["best"], keepdims=0),  # [hw]
        helper.make_node("Mul", ["best", "c_gain"], ["best_scaled"]),
        helper.make_node("Reshape", ["best_scaled", "shape_map"], ["best_map"]),  # [1, 1, h, w]
        helper.make_node("ReduceMean", [contract.RECHECK_FEATURES, "axis1"], ["feat_mean"], keepdims=1),
        helper.make_node("Mul", ["feat_mean", "c_feat"], ["feat_term"]),
        helper.make_node("Add", ["best_map", "feat_term"], ["logit_a"]),
        helper.make_node("Add", ["logit_a", "bump"], ["logit0"]),
        helper.make_node("Add", ["logit0", "c_bias"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], [contract.RECHECK_HEATMAP]),
        helper.make_node(
            "MaxPool", [contract.RECHECK_HEATMAP], ["pooled"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]
        ),
        helper.make_node("Equal", [contract.RECHECK_HEATMAP, "pooled"], ["is_peak"]),
        helper.make_node("Where", ["is_peak", contract.RECHECK_HEATMAP, "c_zero"], ["peaks_map"]),
        helper.make_node("Reshape", ["peaks_map", "shape_flat"], ["peaks_flat"]),
        helper.make_node("TopK", ["peaks_flat", "k_peaks"], [contract.TRANS_SCORES, "peak_index"], axis=1),
        helper.make_node("Reshape", [contract.RECHECK_BOXES, "shape_cells_4"], ["cells_4"]),
        helper.make_node("Gather", ["cells_4", "peak_index"], [contract.TRANS_BOXES], axis=0),  # [1, P, 4]
        helper.make_node("Gather", ["cells_e", "peak_index"], [contract.TRANS_EMBEDDINGS], axis=0),  # [1, P, E]
    ]
    nodes.sort(key=lambda node: node.output[0] != "tracklets_t")  # topological: transpose first
    specs_in = meta.recheck_inputs()
    specs_out = meta.recheck_outputs()
    return helper.make_graph(
        nodes,
        "omc_toy_recheck",
        [_value_info(specs_in[name]) for name in contract.RECHECK_INPUTS],
        [_value_info(specs_out[name]) for name in contract.RECHECK_OUTPUTS],
        initializer=inits,
    )


def _model(graph: onnx.GraphProto, meta: EngineMeta) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", meta.opset)], producer_name="omc-toy-engines"
    )
    model.ir_version = 9  # readable by every onnxruntime the project supports
    helper.set_model_props(model, {key: json.dumps(value, sort_keys=True) for key, value in meta.to_dict().items()})
    onnx.checker.check_model(model, full_check=True)
    return model


def write_toy_engines(
    out_dir: str | Path,
    meta: EngineMeta | None = None,
    *,
    with_recheck: bool = True,
    seed: int = 0,
) -> EngineMeta:
    """Write detector.onnx, recheck.onnx (when `with_recheck`) and export.json into `out_dir`.

    meta: the export to imitate (sizes, K, P, C, E, limits); TOY_META when None.
    with_recheck: False writes a CSTrack-style export (five detector outputs, no recheck.onnx).
    seed: seeds the constant tables (boxes, densities, codes, conv weights).
    Returns the EngineMeta written to export.json.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = TOY_META if meta is None else meta
    meta = replace(meta, has_recheck=with_recheck, recheck_channels=meta.recheck_channels if with_recheck else 0)
    if with_recheck and meta.recheck_channels < 1:
        meta = replace(meta, recheck_channels=TOY_META.recheck_channels)
    meta.validate()
    tables = _toy_tables(meta, np.random.default_rng(seed))
    onnx.save(_model(_detector_graph(meta, tables), meta), str(out / contract.DETECTOR_ONNX))
    if with_recheck:
        onnx.save(_model(_recheck_graph(meta), meta), str(out / contract.RECHECK_ONNX))
    else:
        (out / contract.RECHECK_ONNX).unlink(missing_ok=True)
    (out / contract.EXPORT_JSON).write_text(meta.to_json())
    return meta
