"""`load_checkpoint`: any supported checkpoint file to a float32 eval-mode OMCNetwork, and what it said."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from omc.errors import BadInput, CheckpointError
from omc.export.checkpoint.architecture_inference import infer_architecture
from omc.export.checkpoint.formats import FORMAT_RANDOM, interpret, plain_value
from omc.export.checkpoint.unpickle import first_line, read_checkpoint_object
from omc.export.model import DEFAULT_INPUT_HW, Architecture, OMCNetwork
from omc.files import file_sha256

log = logging.getLogger(__name__)

# What building a network from a malformed stored config raises (besides BadInput).
_CONFIG_ERRORS = (TypeError, ValueError, KeyError, IndexError, OverflowError, RuntimeError)

# Printed keys per category in a does-not-fit error.
MAX_LISTED_KEYS = 6


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A network ready to run (float32, eval mode, no gradients) and what the file said about it.

    config: the recorded model-config dict (reference schema). training_options: the reference's
    `opt` Namespace as a dict ({} when the file has none). source_sha256: hex digest of the file
    ("" for random weights). parameter_count: learnable parameters of `network`.
    """

    network: OMCNetwork
    architecture: Architecture
    config: dict[str, Any]
    training_options: dict[str, Any]
    source_path: Path | None
    source_sha256: str
    source_format: str
    parameter_count: int
    epoch: int | None = None

    @property
    def has_recheck(self) -> bool:
        return self.architecture.has_recheck

    @property
    def random_weights(self) -> bool:
        return self.source_format == FORMAT_RANDOM

    def summary(self) -> dict[str, Any]:
        """JSON-able facts (what `omc inspect` prints)."""
        arch = self.architecture
        base = sum(p.numel() for p in self.network.model.parameters())
        return {
            "checkpoint": str(self.source_path) if self.source_path else None,
            "sha256": self.source_sha256,
            "format": self.source_format,
            "variant": arch.variant,
            "depth_multiple": arch.depth_multiple,
            "width_multiple": arch.width_multiple,
            "parameters": self.parameter_count,
            "base_parameters": base,
            "recheck_parameters": self.parameter_count - base,
            "has_recheck": arch.has_recheck,
            "recheck_channels": arch.recheck_channels,
            "global_point": arch.global_point,
            "shrink_radius": arch.shrink_radius,
            "embedding_dim": arch.embedding_dim,
            "level_channels": list(self.network.model.level_channels),
            "level_strides": list(self.network.model.level_strides),
            "anchors": [list(level) for level in arch.anchors],
            "epoch": self.epoch,
            "config": self.config,
            "training_options": self.training_options,
        }


def _shape(t: Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def _listing(label: str, items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED_KEYS])
    more = f" (+{len(items) - MAX_LISTED_KEYS} more)" if len(items) > MAX_LISTED_KEYS else ""
    return f"{len(items)} {label}: {shown}{more}"


def check_state_fits(network: OMCNetwork, state: Mapping[str, Tensor], what: str) -> None:
    """CheckpointError listing missing, unexpected and mis-shaped keys, when `state` does not fit."""
    expected = network.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} (file {_shape(state[k])}, model {_shape(v)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or misshaped:
        parts = [
            _listing(label, items)
            for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
            if items
        ]
        raise CheckpointError(f"{what} does not fit the architecture it describes: " + "; ".join(parts))


def check_finite(state: Mapping[str, Tensor], what: str) -> None:
    """CheckpointError naming the floating-point tensors that hold NaN or inf.

    Such weights make every score NaN: the engines would yield no detection (or, before the
    graphs guarded their gathers, fail), so they are refused where they enter.
    """
    bad = [name for name, tensor in state.items() if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise CheckpointError(f"{what} holds non-finite weights (NaN or inf) in {_listing('tensor(s)', bad)}; "
                              "it is damaged or its training diverged")  # fmt: skip


def finish_network(network: OMCNetwork) -> OMCNetwork:
    network.float().eval()
    network.requires_grad_(False)
    return network


def load_checkpoint(path: str | Path, input_hw: tuple[int, int] = DEFAULT_INPUT_HW) -> LoadedCheckpoint:
    """Read any supported checkpoint into a float32 eval-mode OMCNetwork built for input_hw (H, W).

    Raises CheckpointError (missing/unreadable file, no model, weights that do not fit) or
    UnsafeCheckpoint (a global outside the allow-list; nothing from the file ran).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        sha256 = file_sha256(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path} ({exc.strerror or exc})") from None
    contents = interpret(read_checkpoint_object(path), path)
    try:
        arch = infer_architecture(contents, path)
        network = OMCNetwork(arch, input_hw)
    except BadInput as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from None
    except _CONFIG_ERRORS as exc:
        # The config is data from the file: a value of the wrong type or size that the config
        # check lets through surfaces as one of these inside the network's constructors.
        raise CheckpointError(f"checkpoint {path}: its model config does not build an OMC network ({first_line(exc)})") from None
    check_state_fits(network, contents.state, f"checkpoint {path}")
    check_finite(contents.state, f"checkpoint {path}")
    network.load_state_dict(contents.state, strict=False)
    finish_network(network)
    log.info("loaded %s (%s, variant %s, %s parameters)", path, contents.source_format, arch.variant,
             f"{sum(p.numel() for p in network.parameters()):,}")
    return LoadedCheckpoint(
        network=network,
        architecture=arch,
        config=plain_value(contents.config if contents.config is not None else arch.config),
        training_options=plain_value(contents.options),
        source_path=path,
        source_sha256=sha256,
        source_format=contents.source_format,
        parameter_count=sum(p.numel() for p in network.parameters()),
        epoch=contents.epoch,
    )
