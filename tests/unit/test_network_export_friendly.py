"""The re-check core exports with the default (dynamo) ONNX exporter at opset 18 and runs in ONNX Runtime.

Guards the export-friendly formulation (export-and-tensorrt-notes.md): comparisons against iota,
clamp_min guards, explicit reduction axes, only n dynamic. (The detector's export, with the CCN
pooling matrices, is covered by the export package's tests; measured here during development:
tiny model at 576 x 320, ONNX Runtime vs PyTorch within 0.08 px / 2.5e-5 on the fixture frame.)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

import reference_layout as ref  # tests/ is on sys.path through its conftest.py
from omc.export.model import OMCNetwork, architecture_from_config, build_network

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

INPUT_HW = (192, 320)
OPSET = 18


class _Recheck(torch.nn.Module):
    def __init__(self, network: OMCNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, id_unit: Tensor, features: Tensor, tracklets: Tensor) -> tuple[Tensor, Tensor]:
        aggregated = self.network.aggregate_similarity(id_unit, tracklets, 3, "reference", True)
        return aggregated, self.network.recheck_heatmap(aggregated, features)


@pytest.fixture(scope="module")
def network() -> OMCNetwork:
    torch.manual_seed(0)
    return build_network(architecture_from_config(ref.TINY_CONFIG, recheck_channels=32), INPUT_HW)


def _export(module: torch.nn.Module, args: tuple[Tensor, ...], path: Path, dynamic: dict) -> "ort.InferenceSession":  # type: ignore[type-arg]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, path, dynamo=True, opset_version=OPSET, dynamic_shapes=dynamic, verbose=False)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_recheck_core_exports_with_dynamic_tracklet_count(network: OMCNetwork, tmp_path: Path) -> None:
    h, w = network.map_hw
    generator = torch.Generator().manual_seed(1)
    id_unit = network.normalize_id_map(torch.randn(1, h, w, 512, generator=generator))
    features = torch.randn(1, 32, h, w, generator=generator)
    n = torch.export.Dim("n", min=1, max=512)
    module = _Recheck(network).eval()
    session = _export(module, (id_unit, features, id_unit[0, 2:5, 3]), tmp_path / "recheck.onnx",
                      {"id_unit": None, "features": None, "tracklets": {0: n}})
    names = [i.name for i in session.get_inputs()]
    cases = {
        "one": id_unit[0, 0:1, 0],  # window clipped at the top-left corner
        "five": id_unit[0, 10:15, 20],
        "all-zero Ms": torch.zeros(1, 512),  # every cosine 0: Ms must stay 0, not NaN
    }
    for name, tracklets in cases.items():
        got = session.run(None, dict(zip(names, [id_unit.numpy(), features.numpy(), tracklets.numpy()])))
        with torch.no_grad():
            expected = module(id_unit, features, tracklets)
        for a, b in zip(got, expected):
            assert not np.isnan(a).any(), name
            np.testing.assert_allclose(a, b.numpy(), atol=1e-4, err_msg=name)
