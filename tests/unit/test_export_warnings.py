"""The ONNX export drops only the exporters' known noise and logs every other warning (issue 14.8)."""

from __future__ import annotations

import logging
import warnings

import pytest

torch = pytest.importorskip("torch")

from omc.export.onnx_export import exporter_warnings  # noqa: E402

TRACER_TEXT = "Converting a tensor to a Python boolean might cause the trace to be incorrect."


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_known_noise_is_dropped_and_other_warnings_are_logged_once() -> None:
    handler = Collect()
    logger = logging.getLogger("omc.export.onnx_export")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as outside:
            warnings.simplefilter("always")
            with exporter_warnings():
                # A spatial-size check in the network: a constant of the export, as it should be.
                warnings.warn_explicit(TRACER_TEXT, torch.jit.TracerWarning, "heads.py", 93, module="omc.export.model.heads")
                # The same warning from code the list does not name (e.g. a new batch-dependent branch).
                for _ in range(2):
                    warnings.warn_explicit(TRACER_TEXT, torch.jit.TracerWarning, "layer.py", 7, module="newcode.layer")
                warnings.warn_explicit("something new", UserWarning, "graphs.py", 3, module="omc.export.graphs")
    finally:
        logger.removeHandler(handler)
    assert outside == []  # nothing reaches the caller's filters
    assert handler.messages == [
        f"exporter: TracerWarning (layer.py:7): {TRACER_TEXT}",
        "exporter: UserWarning (graphs.py:3): something new",
    ]
