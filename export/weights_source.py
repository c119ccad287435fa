"""Which float32 network a command works with: a checkpoint file, seeded random weights, or the
weights an export's export.json records (`omc inspect`, `omc export`, `omc verify`).

Light at import (no torch): the command-line parser reads RANDOM_VARIANTS from here; the network
loads only in `load`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omc.contract import EngineMeta
from omc.errors import BadInput

if TYPE_CHECKING:
    from omc.export.checkpoint import LoadedCheckpoint

# Variants random weights can build (omc.export.model.VARIANT_MULTIPLES; kept literal here so that
# building the command-line parser does not import torch).
RANDOM_VARIANTS = ("s", "m", "l", "x")
DEFAULT_RANDOM_VARIANT = "l"
DEFAULT_RANDOM_SEED = 0


@dataclass(frozen=True)
class WeightsSource:
    """A checkpoint file, or seeded random weights of `variant` (random_weights True)."""

    checkpoint: Path | None = None
    random_weights: bool = False
    variant: str = DEFAULT_RANDOM_VARIANT
    seed: int = DEFAULT_RANDOM_SEED

    @property
    def given(self) -> bool:
        """Whether a checkpoint or random weights were asked for."""
        return self.checkpoint is not None or self.random_weights

    @property
    def export_seed(self) -> int | None:
        """The seed an export of these weights records (random weights only)."""
        return self.seed if self.random_weights else None

    def check(self) -> None:
        """BadInput when both or neither of a checkpoint and random weights are given."""
        if self.random_weights and self.checkpoint is not None:
            raise BadInput("give either a checkpoint or --random-weights, not both")
        if not self.given:
            raise BadInput("give a checkpoint file, or --random-weights for a seeded random network")

    def load(self, input_hw: tuple[int, int] | None = None) -> "LoadedCheckpoint":
        """The network, built for input size (H, W) (the default size when None); BadInput as `check`."""
        self.check()
        from omc.export.checkpoint import load_checkpoint, random_checkpoint
        from omc.export.model import DEFAULT_INPUT_HW

        hw = DEFAULT_INPUT_HW if input_hw is None else input_hw
        if self.checkpoint is None:
            return random_checkpoint(self.variant, seed=self.seed, input_hw=hw)
        return load_checkpoint(self.checkpoint, input_hw=hw)


def weights_of_export(meta: EngineMeta, given: WeightsSource = WeightsSource()) -> "LoadedCheckpoint":
    """The float32 network an export was made from, built for its input size.

    given: weights to use instead of export.json's record (they must be the export's: same
    SHA-256, or random weights for a random-weight export). BadInput when export.json records
    no usable source or the given / recorded checkpoint is not the one exported.
    """
    from omc.export.checkpoint import load_checkpoint, random_checkpoint
    from omc.export.model import Architecture
    from omc.export.onnx_export import SOURCE_CHECKPOINT, SOURCE_RANDOM

    hw = meta.input_hw
    if given.given:
        loaded = given.load(hw)
        if loaded.source_sha256 != meta.checkpoint_sha256:
            raise BadInput(f"{given.checkpoint or 'the random weights'} are not the weights this export was made from "
                           f"(export.json records sha256 '{meta.checkpoint_sha256 or 'random weights'}')")
        return loaded
    source = meta.extra.get("source", {})
    if source.get("kind") == SOURCE_RANDOM:
        # Exports made before the architecture was recorded name only the variant.
        recorded = source.get("architecture")
        arch = Architecture.from_dict(recorded) if recorded else source.get("variant", DEFAULT_RANDOM_VARIANT)
        return random_checkpoint(arch, seed=int(source.get("seed") or 0), input_hw=hw)
    if source.get("kind") == SOURCE_CHECKPOINT:
        path = Path(source["path"])
        if not path.is_file():
            raise BadInput(f"export.json names the checkpoint {path}, which is not there; pass it with --weights")
        loaded = load_checkpoint(path, input_hw=hw)
        if loaded.source_sha256 != meta.checkpoint_sha256:
            raise BadInput(f"{path} changed since the export (sha256 differs from export.json); pass the original "
                           "with --weights or export again")
        return loaded
    raise BadInput("export.json does not record the weights it came from; pass them with --weights")
