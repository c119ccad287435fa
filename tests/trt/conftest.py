"""Fixtures of the TensorRT tests: the small exports of trt_exports.py and the plans built from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from paths import rtx_or_skip  # tests/ is on sys.path
from trt_exports import copy_engines, write_contract_export  # tests/trt is on sys.path (conftest dir)


@pytest.fixture(scope="session")
def fp32_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export_fp32")
    write_contract_export(out, "fp32")
    return out


@pytest.fixture(scope="session")
def fp16_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export_fp16")
    write_contract_export(out, "fp16")
    return out


@pytest.fixture(scope="session")
def int8_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export_int8")
    write_contract_export(out, "int8")
    return out


@pytest.fixture(scope="session")
def rtx_module() -> object:
    """The TensorRT for RTX module (builds without a GPU); the test is skipped when absent (fails
    instead under `make test`, which installs it)."""
    return rtx_or_skip()


@pytest.fixture(scope="session")
def rtx_engines(tmp_path_factory: pytest.TempPathFactory, fp32_export: Path, rtx_module: object) -> Path:
    """fp32 plans + sidecars built by TensorRT for RTX into a copy of the fp32 export."""
    from omc.config import TensorRTBuildConfig
    from omc.export.trt.builder import build_engines

    out = copy_engines(fp32_export, tmp_path_factory.mktemp("engines_fp32"))
    build_engines(out, out, TensorRTBuildConfig(edition="rtx"))
    return out
