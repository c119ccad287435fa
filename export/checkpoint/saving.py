"""`save_checkpoint`: omc's own checkpoint format, readable with torch.load(weights_only=True)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import torch

from omc.export.checkpoint.formats import OMC_FORMAT, OMC_FORMAT_VERSION, plain_value
from omc.export.model import OMCNetwork
from omc.files import replacing

log = logging.getLogger(__name__)


def save_checkpoint(
    path: str | Path,
    network: OMCNetwork,
    *,
    training_options: Mapping[str, Any] = MappingProxyType({}),
    source_sha256: str = "",
) -> Path:
    """Write `network` in omc's format (readable with torch.load(weights_only=True)); returns the path.

    Tensors are stored as they are (float32 after load_checkpoint); written to a temporary name
    in the same folder, then renamed.
    """
    path = Path(path)
    payload = {
        "format": OMC_FORMAT,
        "version": OMC_FORMAT_VERSION,
        "architecture": network.architecture.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
        "training_options": json.loads(json.dumps(plain_value(training_options))),
        "source_sha256": source_sha256,
    }
    with replacing(path) as temporary:
        torch.save(payload, temporary)
    log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path
