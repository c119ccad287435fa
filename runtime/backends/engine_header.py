"""The sidecar metadata of a TensorRT engine, and the check that runs before deserialising it.

A TensorRT plan only runs under the exact TensorRT edition and version that built it, on the GPU
targets it was built for, and it only means something together with the export.json it was built
from. `omc build` therefore writes, next to each plan, `<plan>.json` (e.g. `detector.plan.json`)
with the export.json content, the edition, the TensorRT version, the GPU targets, the profiles and
the plan's SHA-256. The runtime reads it and refuses a mismatch with an EngineMismatch that names
the difference and the command that rebuilds the engine, before TensorRT sees a byte of the plan
(TensorRT's own reaction to a foreign plan is a log line and None, or a crash).

Why a sidecar file and not a header inside the plan: the plan stays a plain TensorRT plan, so
`trtexec --loadEngine`, Polygraphy and TensorRT's own tools open it unchanged; the metadata is
readable with any JSON tool; and the check needs neither TensorRT nor a GPU, so it runs (and is
tested) on any machine. The SHA-256 binds the two files together: a plan replaced without its
sidecar is refused.

This module imports the standard library and omc's core modules only: no TensorRT, no CUDA library.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from omc.config import RTX_GPU_TARGETS
from omc.contract import EXPORT_JSON, PLAN_HEADER_SUFFIX, EngineMeta
from omc.errors import EngineMismatch
from omc.files import replacing

SIDECAR_SUFFIX = PLAN_HEADER_SUFFIX
# Bumped when the sidecar's keys change meaning; other versions are refused like a mismatch.
HEADER_VERSION = 1
# Edition names as `omc build --edition` spells them.
EDITION_TENSORRT = "tensorrt"
EDITION_RTX = "rtx"
EDITION_TITLES = {EDITION_TENSORRT: "NVIDIA TensorRT", EDITION_RTX: "TensorRT for RTX"}


@dataclass(frozen=True)
class EngineHeader:
    """What `<plan>.json` records about one engine.

    engine: "detector" or "recheck".  edition: "tensorrt" or "rtx".  tensorrt_version: the
    building library's version string.  gpu_targets: compute capabilities the plan runs on, as
    "SM86" etc.  portable: True for a TensorRT for RTX build without explicit targets.
    plan_sha256 / plan_bytes: of the plan file.  profiles: input name -> [min, opt, max] shapes.
    export: the export.json content the plan was built from.  onnx_dir: the folder it was built
    from (for the rebuild command).  omc_version: the omc that built it.
    """

    engine: str
    edition: str
    tensorrt_version: str
    gpu_targets: tuple[str, ...]
    portable: bool
    plan_sha256: str
    plan_bytes: int
    profiles: dict[str, list[list[int]]]
    export: dict[str, Any]
    onnx_dir: str
    omc_version: str
    header_version: int = HEADER_VERSION
    build_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["gpu_targets"] = list(self.gpu_targets)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EngineHeader":
        kwargs = dict(data)
        kwargs["gpu_targets"] = tuple(kwargs.get("gpu_targets", ()))
        return cls(**kwargs)


def sidecar_path(plan_path: str | Path) -> Path:
    """`detector.plan` -> `detector.plan.json`."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + SIDECAR_SUFFIX)


def plan_sha256(plan: bytes) -> str:
    return hashlib.sha256(plan).hexdigest()


def write_header(plan_path: str | Path, header: EngineHeader) -> Path:
    """Write `<plan>.json` through a temporary name and a rename; returns its path."""
    target = sidecar_path(plan_path)
    with replacing(target) as temporary:
        temporary.write_text(header.to_json() + "\n")
    return target


def rebuild_command(plan_path: str | Path, edition: str, gpu_target: str | None = None, onnx_dir: str = "") -> str:
    """The `omc build` command line that rebuilds the engines in `plan_path`'s folder."""
    engine_dir = Path(plan_path).parent
    source = Path(onnx_dir) if onnx_dir and (Path(onnx_dir) / EXPORT_JSON).is_file() else engine_dir
    command = f"omc build --onnx {source}"
    if source.resolve() != engine_dir.resolve():
        command += f" --out {engine_dir}"
    command += f" --edition {edition}"
    if gpu_target:
        command += f" --gpu-target {gpu_target}"
    return command


def read_header(plan_path: str | Path, edition: str) -> EngineHeader:
    """Read `<plan>.json`; EngineMismatch (with the rebuild command for `edition`) when it is
    missing, unreadable or of another header version."""
    plan_path = Path(plan_path)
    path = sidecar_path(plan_path)
    if not plan_path.is_file():
        raise EngineMismatch(f"{plan_path} not found; build it: {rebuild_command(plan_path, edition)}")
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        header = EngineHeader.from_dict(data)
    except FileNotFoundError:
        raise EngineMismatch(
            f"{plan_path.name} has no {path.name} (its edition, version and export are unknown); "
            f"rebuild it: {rebuild_command(plan_path, edition)}"
        ) from None
    except (OSError, ValueError, TypeError) as exc:
        raise EngineMismatch(
            f"{path} is not a readable engine sidecar ({exc}); rebuild it: {rebuild_command(plan_path, edition)}"
        ) from None
    if header.header_version != HEADER_VERSION:
        raise EngineMismatch(
            f"{path} has sidecar version {header.header_version}, this omc reads version {HEADER_VERSION}; "
            f"rebuild it: {rebuild_command(plan_path, edition, onnx_dir=header.onnx_dir)}"
        )
    return header


def compute_capability_name(major: int, minor: int) -> str:
    """(8, 6) -> "SM86"."""
    return f"SM{major}{minor}"


def compute_capability_of(target: str) -> tuple[int, int]:
    """"SM86" -> (8, 6), "SM120" -> (12, 0): the last digit is the minor version."""
    digits = target.removeprefix("SM")
    return int(digits[:-1]), int(digits[-1])


def covers_gpu(header: EngineHeader, compute_capability: tuple[int, int]) -> bool:
    """Whether the sidecar says the plan runs on a GPU of `compute_capability`.

    Listed targets do; so does, for a portable TensorRT for RTX plan, any GPU newer than its
    newest listed target (NVIDIA documents the portable build for those "and later"): for these
    the sidecar cannot know, and TensorRT's own validity check on the host decides.
    """
    if compute_capability_name(*compute_capability) in header.gpu_targets:
        return True
    newest = max((compute_capability_of(target) for target in header.gpu_targets), default=None)
    return header.portable and newest is not None and tuple(compute_capability) > newest


def export_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line per export.json key whose value differs ("key: <recorded> in the engine, <current>
    in export.json"), sorted by key; empty when they agree."""
    # JSON round trip so tuples and lists, ints and floats compare as export.json stores them.
    left = json.loads(json.dumps(dict(recorded), sort_keys=True))
    right = json.loads(json.dumps(dict(current), sort_keys=True))
    return [
        f"{key}: {json.dumps(left.get(key))} in the engine, {json.dumps(right.get(key))} in export.json"
        for key in sorted(set(left) | set(right))
        if left.get(key) != right.get(key)
    ]


def check_header(
    header: EngineHeader,
    plan_path: str | Path,
    plan: bytes,
    meta: EngineMeta,
    edition: str,
    tensorrt_version: str,
    compute_capability: tuple[int, int] | None,
) -> None:
    """Raise EngineMismatch unless `plan` (the bytes of `plan_path`) can run here with `meta`.

    edition / tensorrt_version: of the TensorRT this process loaded.  compute_capability: of the
    GPU that will run it, or None when it cannot be read (no GPU: deserialising then fails with
    its own clear error). Checked in order: edition, version, GPU target, export content, the
    plan's SHA-256.
    """
    plan_path = Path(plan_path)
    name = plan_path.name

    def refuse(problem: str, gpu_target: str | None = None) -> EngineMismatch:
        command = rebuild_command(plan_path, edition, gpu_target, header.onnx_dir)
        return EngineMismatch(f"{name} {problem}; rebuild it: {command}")

    if header.edition != edition:
        built = EDITION_TITLES.get(header.edition, header.edition)
        here = EDITION_TITLES.get(edition, edition)
        raise refuse(f"was built by {built} {header.tensorrt_version}, but this process runs {here} {tensorrt_version}")
    if header.tensorrt_version != tensorrt_version:
        raise refuse(
            f"was built by {EDITION_TITLES.get(edition, edition)} {header.tensorrt_version}, "
            f"but {tensorrt_version} is installed (plans only load in the version that built them)"
        )
    if compute_capability is not None and not covers_gpu(header, compute_capability):
        target = compute_capability_name(*compute_capability)
        what = "portable build for " if header.portable else ""
        problem = f"was built for {what}{', '.join(header.gpu_targets)}, not for this GPU ({target})"
        if edition == EDITION_RTX and target not in RTX_GPU_TARGETS:
            raise EngineMismatch(
                f"{name} {problem}, and TensorRT for RTX has no {target} target; run the ONNX Runtime backend "
                f"here, or build with full TensorRT on this host: {rebuild_command(plan_path, EDITION_TENSORRT, None, header.onnx_dir)}"
            )
        raise refuse(problem, gpu_target=target if edition == EDITION_RTX else None)
    differences = export_differences(header.export, meta.to_dict())
    if differences:
        raise refuse(f"was built from a different export ({'; '.join(differences[:3])})")
    if len(plan) != header.plan_bytes or plan_sha256(plan) != header.plan_sha256:
        raise refuse(f"does not match the SHA-256 in {sidecar_path(plan_path).name} (the plan was replaced or damaged)")


def load_checked_plan(
    plan_path: str | Path,
    meta: EngineMeta,
    edition: str,
    tensorrt_version: str,
    compute_capability: tuple[int, int] | None,
) -> tuple[EngineHeader, bytes]:
    """Read `<plan>.json` and the plan, check them (see `check_header`): (header, plan bytes)
    ready to deserialise. Raises EngineMismatch instead of returning a plan that does not fit."""
    header = read_header(plan_path, edition)
    plan = Path(plan_path).read_bytes()
    check_header(header, plan_path, plan, meta, edition, tensorrt_version, compute_capability)
    return header, plan
