"""Reading OMC / CSTrack checkpoints without running code from the file, and writing omc's own.

One module per job:
- `unpickle`: the allow-list unpickler (nothing a pickle names runs; refused globals are named);
- `formats`: which kind of checkpoint a file holds and its state dict in OMCNetwork's keys;
- `architecture_inference`: the network the stored config, options and weight shapes describe;
- `loading`: `load_checkpoint` and `LoadedCheckpoint`;
- `saving`: `save_checkpoint` (omc's own format);
- `random_weights`: `random_checkpoint`, a seeded random network.

Formats read (omc-reference.md section 6):
- reference stage-2 training checkpoints: `torch.save` of a dict whose `model` (or `ema`) is a
  pickled float16 `SiamMot` (base `Model` in `.model`, config dict in `.model.yaml`, run options
  in `.opt`, an argparse Namespace);
- reference stage-1 checkpoints: the same with a bare `Model` (no re-check network);
- plain state dicts, at the top level or under `model` / `state_dict`, in either key layout;
- omc's own format (`save_checkpoint`): {'format': 'omc-checkpoint', 'version': 1,
  'architecture': Architecture.to_dict(), 'state_dict': {...}, 'training_options': {...},
  'source_sha256': str}, readable by `torch.load(weights_only=True)`.

The architecture is inferred from the stored config and the weight shapes; no reference code is
needed.
"""

from __future__ import annotations

from omc.export.checkpoint.formats import (
    FORMAT_DESCRIPTIONS,
    FORMAT_OMC,
    FORMAT_RANDOM,
    FORMAT_REFERENCE_STAGE1,
    FORMAT_REFERENCE_STAGE2,
    FORMAT_STATE_DICT,
    OMC_FORMAT,
    OMC_FORMAT_VERSION,
    describe_format,
)
from omc.export.checkpoint.loading import MAX_LISTED_KEYS, LoadedCheckpoint, check_state_fits, load_checkpoint
from omc.export.checkpoint.random_weights import random_checkpoint
from omc.export.checkpoint.saving import save_checkpoint
from omc.export.checkpoint.unpickle import PickledObject, RestrictedUnpickler, read_checkpoint_object, resolve_global

__all__ = [
    "FORMAT_DESCRIPTIONS",
    "FORMAT_OMC",
    "FORMAT_RANDOM",
    "FORMAT_REFERENCE_STAGE1",
    "FORMAT_REFERENCE_STAGE2",
    "FORMAT_STATE_DICT",
    "MAX_LISTED_KEYS",
    "OMC_FORMAT",
    "OMC_FORMAT_VERSION",
    "LoadedCheckpoint",
    "PickledObject",
    "RestrictedUnpickler",
    "check_state_fits",
    "describe_format",
    "load_checkpoint",
    "random_checkpoint",
    "read_checkpoint_object",
    "resolve_global",
    "save_checkpoint",
]
