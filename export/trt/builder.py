"""Build `detector.plan` and `recheck.plan` from an ONNX export with TensorRT (`omc build`).

One code path for both editions (export-and-tensorrt-notes.md): NVIDIA TensorRT and TensorRT for
RTX share the builder API. Differences handled here, each in one place:
- strongly typed networks: precision comes from the ONNX graph (an fp16 engine is built from an
  fp16 graph). TensorRT for RTX's `create_network(0)` is strongly typed; full TensorRT needs the
  STRONGLY_TYPED flag;
- GPU targets (`--gpu-target SM86`...) exist only in TensorRT for RTX; its default build is
  portable. Full TensorRT builds for the GPU it runs on;
- INT8 Q/DQ graphs need full TensorRT (TensorRT for RTX has no INT8 convolutions), and Turing
  (SM75) needs fp16 graphs (TensorRT for RTX refuses fp32 matrix multiplies there): both are
  refused in one sentence before TensorRT is asked to build;
- timing caches: full TensorRT reads and updates one; TensorRT for RTX ignores them (its
  kernels are compiled on the user's GPU at first run), so the option is logged as unused;
- TF32: TensorRT allows it by default for float32 convolutions and matrix multiplies (10-bit
  mantissa products on Ampere and newer). An fp32 export asks for float32 and `omc verify`
  holds its engines to float32 tolerances, so fp32 builds clear the flag; fp16 graphs set
  their own precision. The sidecar records the choice (`extra["tf32"]`).
- CUDA graphs need nothing from the build: TensorRT for RTX captures through its runtime config,
  omc's own capture (full TensorRT) needs no builder flag (runtime/backends/trt.py).

TensorRT for RTX builds without a GPU, so all of this runs in CI. Each plan is written through a
temporary name and a rename, with its `<plan>.json` sidecar (runtime/backends/engine_header.py).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from omc import __version__, contract
from omc.config import RTX_PORTABLE_TARGETS, TensorRTBuildConfig
from omc.contract import DETECTOR, RECHECK, EngineMeta, TensorSpec
from omc.errors import BadInput, OmcError
from omc.files import replacing
from omc.runtime.backends.binding_plan import ProfileShape, profile_shapes
from omc.runtime.backends.cuda_memory import device_compute_capability
from omc.runtime.backends.engine_header import (
    EDITION_RTX,
    EDITION_TENSORRT,
    EngineHeader,
    compute_capability_name,
    plan_sha256,
    write_header,
)
from omc.runtime.backends.trt import TensorRTEdition, load_tensorrt, make_trt_logger

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

TURING_TARGET = "SM75"


@dataclass(frozen=True)
class NetworkTensor:
    """A parsed network's input or output: NumPy dtype name and shape (-1 for a dynamic axis)."""

    name: str
    is_input: bool
    dtype: str
    shape: tuple[int, ...]


@dataclass
class ParsedNetwork:
    """An ONNX file parsed by TensorRT, ready for a builder config (keeps the objects alive)."""

    edition: TensorRTEdition
    onnx_path: Path
    builder: trt.Builder
    network: trt.INetworkDefinition
    parser: trt.OnnxParser
    logger: Any

    def tensors(self) -> dict[str, NetworkTensor]:
        """The network's inputs and outputs by name, as TensorRT parsed them."""
        module = self.edition.module
        found: dict[str, NetworkTensor] = {}
        for is_input, count, get in (
            (True, self.network.num_inputs, self.network.get_input),
            (False, self.network.num_outputs, self.network.get_output),
        ):
            for index in range(count):
                tensor: trt.ITensor = get(index)
                dims = tensor.shape
                found[tensor.name] = NetworkTensor(
                    name=tensor.name,
                    is_input=is_input,
                    dtype=np.dtype(module.nptype(tensor.dtype)).name,
                    shape=tuple(int(dims[axis]) for axis in range(len(dims))),
                )
        return found


@dataclass(frozen=True)
class BuiltEngine:
    """One finished plan: which engine, where, how long the build took (s), its size (bytes)."""

    engine: str
    plan_path: Path
    seconds: float
    nbytes: int


def graph_has_quantization(onnx_path: Path) -> bool | None:
    """True when the ONNX graph has QuantizeLinear/DequantizeLinear nodes; None when the `onnx`
    package is not installed (the caller then relies on export.json's precision). BadInput when
    the file is no ONNX model."""
    try:
        import onnx
        from google.protobuf.message import DecodeError
    except ImportError:
        return None
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except DecodeError as exc:
        # TensorRT for RTX's parser accepts some such files as empty graphs: say it here.
        raise BadInput(f"{onnx_path} is not an ONNX model ({exc}); export it again (omc export)") from None
    return any(node.op_type in contract.QDQ_OPS for node in model.graph.node)


def check_buildable(meta: EngineMeta, quantized: bool, edition: str, gpu_targets: tuple[str, ...]) -> None:
    """Refuse, in one sentence, builds TensorRT would reject or mis-build (see the module doc)."""
    if gpu_targets and edition != EDITION_RTX:
        raise BadInput(
            f"--gpu-target {','.join(gpu_targets)} applies to TensorRT for RTX only; "
            "full TensorRT builds for the GPU it runs on (use --edition rtx, or drop --gpu-target)"
        )
    if (quantized or meta.precision == "int8") and edition == EDITION_RTX:
        raise BadInput(
            "this export is an INT8 Q/DQ graph, which only full NVIDIA TensorRT builds (TensorRT for RTX "
            "has no INT8 convolutions); use --edition tensorrt on a TensorRT host, or build an fp16 export"
        )
    if TURING_TARGET in gpu_targets and meta.precision == "fp32":
        raise BadInput(
            "Turing (--gpu-target SM75) engines need an fp16 graph (TensorRT for RTX refuses fp32 matrix "
            "multiplies on SM75); export with --precision fp16 and build that folder"
        )


def parse_onnx(edition: TensorRTEdition, onnx_path: Path) -> ParsedNetwork:
    """Parse `onnx_path` into a strongly typed TensorRT network; BadInput on a parse error."""
    module = edition.module
    logger = make_trt_logger(edition)
    logger.last_error = ""
    builder: trt.Builder = module.Builder(logger)
    # Strongly typed: TensorRT for RTX networks always are; full TensorRT needs the flag.
    flags = 0 if edition.name == EDITION_RTX else 1 << int(module.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network: trt.INetworkDefinition = builder.create_network(flags)
    parser: trt.OnnxParser = module.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        count = parser.num_errors
        if count:
            error = parser.get_error(0)
            first = f"node '{error.node_name()}' ({error.node_operator()}): {error.desc()}"
        else:
            first = logger.last_error or "no reason given"
        raise BadInput(f"{edition.title} could not parse {onnx_path}: {first} ({count} error(s))")
    return ParsedNetwork(edition, onnx_path, builder, network, parser, logger)


def check_network_contract(parsed: ParsedNetwork, meta: EngineMeta, engine: str) -> None:
    """BadInput unless the parsed network's inputs and outputs are the contract's names, dtypes
    and shapes (dynamic axes where the contract has B or n)."""
    if engine == DETECTOR:
        specs: Mapping[str, TensorSpec] = {**meta.detector_inputs(), **meta.detector_outputs()}
        input_names = set(meta.detector_inputs())
    else:
        specs = {**meta.recheck_inputs(), **meta.recheck_outputs()}
        input_names = set(meta.recheck_inputs())
    found = parsed.tensors()
    problems = []
    missing = sorted(set(specs) - set(found))
    extra = sorted(set(found) - set(specs))
    if missing or extra:
        problems.append(f"tensors missing {missing or 'none'}, unexpected {extra or 'none'}")
    for name in sorted(set(specs) & set(found)):
        spec, tensor = specs[name], found[name]
        want_shape = tuple(-1 if isinstance(dim, str) else dim for dim in spec.shape)
        if tensor.is_input != (name in input_names):
            problems.append(f"'{name}' has the wrong direction")
        if tensor.dtype != spec.dtype:
            problems.append(f"'{name}' is {tensor.dtype}, the contract wants {spec.dtype}")
        if tensor.shape != want_shape:
            problems.append(f"'{name}' has shape {list(tensor.shape)}, the contract wants {list(want_shape)}")
    if problems:
        raise BadInput(f"{parsed.onnx_path} does not follow the engine contract: {'; '.join(problems[:4])}")


def make_profile(parsed: ParsedNetwork, profiles: Mapping[str, ProfileShape]) -> trt.IOptimizationProfile:
    """An optimisation profile with (min, opt, max) for each dynamic input."""
    module = parsed.edition.module
    profile: trt.IOptimizationProfile = parsed.builder.create_optimization_profile()
    for name, shape in profiles.items():
        profile.set_shape(name, module.Dims(list(shape.min)), module.Dims(list(shape.opt)), module.Dims(list(shape.max)))
    return profile


def _set_rtx_targets(config: trt.IBuilderConfig, edition: TensorRTEdition, gpu_targets: tuple[str, ...]) -> None:
    # ComputeCapability and its config fields are TensorRT for RTX API, absent from full TensorRT
    # (and from its type stubs), hence the untyped handle.
    rtx_config: Any = config
    rtx_config.num_compute_capabilities = len(gpu_targets)
    for index, target in enumerate(gpu_targets):
        if not rtx_config.set_compute_capability(getattr(edition.module.ComputeCapability, target), index):
            raise OmcError(f"{edition.title} refused GPU target {target}")


def allows_tf32(precision: str) -> bool:
    """Whether a build of an export of `precision` may run float32 math as TF32: not for fp32."""
    return precision != "fp32"


def builder_config(
    parsed: ParsedNetwork, profiles: Mapping[str, ProfileShape], gpu_targets: tuple[str, ...], tf32: bool
) -> trt.IBuilderConfig:
    """The builder config of one engine: its optimisation profile, TensorRT for RTX targets
    (none: portable), and TF32 allowed or not."""
    config: trt.IBuilderConfig = parsed.builder.create_builder_config()
    if config.add_optimization_profile(make_profile(parsed, profiles)) < 0:
        raise OmcError(f"{parsed.edition.title} refused the optimisation profile {profiles}")
    if gpu_targets:
        _set_rtx_targets(config, parsed.edition, gpu_targets)
    if not tf32:
        config.clear_flag(parsed.edition.module.BuilderFlag.TF32)
    return config


def build_plan(
    parsed: ParsedNetwork,
    profiles: Mapping[str, ProfileShape],
    gpu_targets: tuple[str, ...],
    timing_cache: Path | None,
    tf32: bool = True,
) -> bytes:
    """Serialized engine for `parsed` with one optimisation profile; OmcError when TensorRT fails.

    tf32: allow TF32 for float32 math (TensorRT's default); `build_engines` passes
    `allows_tf32(precision)`."""
    config = builder_config(parsed, profiles, gpu_targets, tf32)
    cache: trt.ITimingCache | None = None
    if timing_cache is not None and parsed.edition.name == EDITION_TENSORRT:
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        if not config.set_timing_cache(cache, False):
            raise BadInput(f"{timing_cache} is not a timing cache this TensorRT and GPU can use; delete it or pick another file")
    parsed.logger.last_error = ""
    serialized: trt.IHostMemory | None = parsed.builder.build_serialized_network(parsed.network, config)
    if serialized is None:
        raise OmcError(
            f"{parsed.edition.title} could not build an engine from {parsed.onnx_path} "
            f"({parsed.logger.last_error or 'no reason given'})"
        )
    if cache is not None and timing_cache is not None:
        _write_atomically(timing_cache, bytes(memoryview(cache.serialize())))
    return bytes(memoryview(serialized))


def _write_atomically(path: Path, data: bytes) -> None:
    with replacing(path) as temporary:
        temporary.write_bytes(data)


def _gpu_targets(edition: TensorRTEdition, config: TensorRTBuildConfig) -> tuple[tuple[str, ...], bool]:
    """(targets the plan runs on, portable?)."""
    if edition.name == EDITION_RTX:
        return (config.gpu_targets, False) if config.gpu_targets else (RTX_PORTABLE_TARGETS, True)
    # Full TensorRT builds for the GPU it runs on (it cannot build without one).
    capability = device_compute_capability(0)
    return ((compute_capability_name(*capability),) if capability else ()), False


def build_engines(
    onnx_dir: str | Path,
    out_dir: str | Path,
    config: TensorRTBuildConfig,
    timing_cache: str | Path | None = None,
) -> list[BuiltEngine]:
    """Build the export in `onnx_dir` into plans (+ sidecars) in `out_dir`.

    Every plan is built in memory first and written only when all built, each through a
    temporary name and a rename; export.json is copied to `out_dir` when it differs from
    `onnx_dir`, since the runtime reads it beside the plans.
    """
    onnx_dir, out_dir = Path(onnx_dir), Path(out_dir)
    if not onnx_dir.is_dir():
        raise BadInput(f"ONNX folder {onnx_dir} not found; export the model first (omc export --out {onnx_dir})")
    meta = EngineMeta.load(onnx_dir)
    engines = [DETECTOR, RECHECK] if meta.has_recheck else [DETECTOR]
    onnx_paths = {engine: onnx_dir / contract.ONNX_FILES[engine] for engine in engines}
    for path in onnx_paths.values():
        if not path.is_file():
            raise BadInput(f"{path} not found; export the model first (omc export --out {onnx_dir})")
    edition = load_tensorrt(config.edition)
    quantized = any(graph_has_quantization(path) is True for path in onnx_paths.values())
    check_buildable(meta, quantized, edition.name, config.gpu_targets)
    targets, portable = _gpu_targets(edition, config)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    if cache_path is not None and edition.name == EDITION_RTX:
        log.info("%s ignores timing caches (its kernels are compiled on the GPU at first run); %s is not used", edition.title, cache_path)

    plans: dict[str, tuple[bytes, float]] = {}
    for engine in engines:
        start = time.perf_counter()
        parsed = parse_onnx(edition, onnx_paths[engine])
        check_network_contract(parsed, meta, engine)
        profiles = profile_shapes(meta, engine, config.opt_batch, config.opt_tracklets)
        plan = build_plan(parsed, profiles, config.gpu_targets, cache_path, allows_tf32(meta.precision))
        plans[engine] = (plan, time.perf_counter() - start)

    out_dir.mkdir(parents=True, exist_ok=True)
    if out_dir.resolve() != onnx_dir.resolve():
        with replacing(out_dir / contract.EXPORT_JSON) as temporary:
            shutil.copyfile(onnx_dir / contract.EXPORT_JSON, temporary)
    built = []
    for engine, (plan, seconds) in plans.items():
        plan_path = out_dir / contract.PLAN_FILES[engine]
        _write_atomically(plan_path, plan)
        profiles = profile_shapes(meta, engine, config.opt_batch, config.opt_tracklets)
        header = EngineHeader(
            engine=engine,
            edition=edition.name,
            tensorrt_version=edition.version,
            gpu_targets=targets,
            portable=portable,
            plan_sha256=plan_sha256(plan),
            plan_bytes=len(plan),
            profiles={name: shape.to_lists() for name, shape in profiles.items()},
            export=meta.to_dict(),
            onnx_dir=str(onnx_dir.resolve()),
            omc_version=__version__,
            build_seconds=round(seconds, 3),
            extra={"tf32": allows_tf32(meta.precision)},
        )
        write_header(plan_path, header)
        log.info(
            "%s: %.2f s, %.1f MB (%s, %s%s)",
            plan_path,
            seconds,
            len(plan) / 1e6,
            edition.title,
            "portable " if portable else "",
            "/".join(targets) or "build GPU",
        )
        built.append(BuiltEngine(engine, plan_path, seconds, len(plan)))
    return built
