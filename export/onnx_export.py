"""`omc export`: detector.onnx, recheck.onnx and export.json from a loaded checkpoint.

The graphs are the modules of omc.export.graphs, traced by one of two exporter routes:
- "dynamo" (opset 18 and up, the default): torch.onnx.export(dynamo=True), the exporter PyTorch
  maintains. It exports every pattern of the contract (export-and-tensorrt-notes.md). Asked for
  opset 17 it exports at 18 and its down-conversion fails on the reductions' axes inputs
  (torch 2.13: "axes_input_to_attribute ... No initializer or constant input"), leaving opset 18,
  hence the second route;
- "torchscript" (opset 17, for TensorRT versions that stop there, e.g. JetPack 5's TensorRT 8.5):
  the legacy tracing exporter.
Each graph is then simplified with onnxslim (constant folding, dead-node removal), its inputs
and outputs are stamped with the contract's names, dtypes and shapes (only B and n symbolic),
export.json's keys are written into its metadata_props (each value JSON-encoded), and it must
pass onnx.checker's full check.

Files are written under temporary names in the target folder and renamed only when everything
succeeded, export.json last; on failure the temporaries (and a folder this call created) are
removed, so a folder never holds a half-written export.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from omc import __version__, contract
from omc.config import ExportConfig
from omc.contract import EngineMeta, TensorSpec
from omc.errors import BadInput, OmcError
from omc.files import PendingFile
from omc.export.checkpoint import LoadedCheckpoint
from omc.export.graphs import DetectorGraph, RecheckGraph
from omc.export.model import OMCNetwork
from omc.export.precision import half_precision_network

log = logging.getLogger(__name__)

DYNAMO_ROUTE, TORCHSCRIPT_ROUTE = "dynamo", "torchscript"
# First opset of the default (dynamo) exporter route; lower opsets use the TorchScript route.
DYNAMO_MIN_OPSET = 18
# Example sizes of the dynamic axes when tracing: 2, not 1, so that the tracer cannot
# specialise the axis to a constant (torch.export's 0/1 specialisation).
EXAMPLE_BATCH = 2
EXAMPLE_TRACKLETS = 3
# Where export.json's `extra` records how the export was made and how to rebuild the network.
SOURCE_CHECKPOINT, SOURCE_RANDOM = "checkpoint", "random"
FP16_ROUTE = "half model, float32 islands for coordinates, explicit casts at the contract boundary"
BYTES_PER_MB = 1e6
# Loggers whose warnings say nothing about our graphs (the exporter notes that torchvision's
# operators are not registered because torchvision is not installed; omc uses none of them).
QUIET_LOGGERS = ("torch.onnx._internal.exporter._registration",)
# Warnings the exporters give for every OMC network and that say nothing about its graphs:
# (category name, message regex, regex of the module that warns). Any other warning is logged.
KNOWN_EXPORT_WARNINGS: tuple[tuple[str, str, str], ...] = (
    # TorchScript tracing (opset 17): the eager fallbacks for another input size (a cell grid, a
    # pooling matrix, a map index) and InstanceNorm's input checks compare spatial sizes, which an
    # export fixes (only B and n are dynamic), so the tracer rightly makes them constants.
    ("TracerWarning", "Converting a tensor to a Python", r"omc\.export\.model\.|torch\.nn\.(modules\.instancenorm|functional)$"),
    # InstanceNorm keeps no running statistics: it normalises with the input's own, as in eval.
    ("UserWarning", "ONNX export mode is set to TrainingMode.EVAL, but operator 'instance_norm'", r"torch\.onnx\."),
    # Opset 17 asks for the TorchScript exporter on purpose (omc export --opset 17).
    ("DeprecationWarning", "You are using the legacy TorchScript-based ONNX export", r"omc\.export\.onnx_export$"),
    ("DeprecationWarning", "The feature will be removed", r"torch\.onnx\._internal\.torchscript_exporter\."),
    # PyTorch's own pytree code, called by the dynamo exporter.
    ("FutureWarning", r"`isinstance\(treespec, LeafSpec\)` is deprecated", ""),
)


@dataclass(frozen=True)
class WrittenFile:
    """One finished artifact: where, how long it took (s), how large it is (bytes)."""

    path: Path
    seconds: float
    nbytes: int


@dataclass(frozen=True)
class ExportResult:
    """What `export_engines` wrote: the folder, its export.json contents and each file."""

    out_dir: Path
    meta: EngineMeta
    files: tuple[WrittenFile, ...]


def exporter_route(opset: int) -> str:
    """"dynamo" for opset 18 and up, "torchscript" below (module docstring)."""
    return DYNAMO_ROUTE if opset >= DYNAMO_MIN_OPSET else TORCHSCRIPT_ROUTE


# --- checks before any work ----------------------------------------------------------------------


def check_output_folder(out_dir: Path) -> None:
    """BadInput unless `out_dir` is (or can become) a writable folder; creates nothing that stays.

    Probes with a temporary file in the folder or in its nearest existing ancestor.
    """
    probe_dir = out_dir
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if probe_dir.exists() and not probe_dir.is_dir():
        what = "is a file" if probe_dir == out_dir else f"lies under the file {probe_dir}"
        raise BadInput(f"output folder {out_dir} cannot be written: it {what}; choose another --out")
    try:
        handle, probe = tempfile.mkstemp(prefix=".omc-write-probe-", dir=probe_dir)
    except OSError as exc:
        raise BadInput(
            f"output folder {out_dir} cannot be written ({exc.strerror or exc} in {probe_dir}); choose another --out"
        ) from None
    os.close(handle)
    os.unlink(probe)


def candidate_count(network: OMCNetwork, input_hw: tuple[int, int]) -> int:
    """Anchor candidates of the detector at `input_hw` (H, W): A x sum over levels of h_i x w_i."""
    detect = network.model.detect
    return detect.anchors_per_level * sum((input_hw[0] // s) * (input_hw[1] // s) for s in detect.strides)


def check_fits(network: OMCNetwork, config: ExportConfig) -> None:
    """BadInput when K or P exceed what the input size offers."""
    width, height = config.img_size
    candidates = candidate_count(network, (height, width))
    if config.topk > candidates:
        raise BadInput(f"--topk {config.topk} exceeds the {candidates} anchor candidates of a {width}x{height} input")
    stride = network.model.level_strides[0]
    cells = (height // stride) * (width // stride)
    if config.peaks > cells:
        raise BadInput(f"--peaks {config.peaks} exceeds the {cells} cells of the re-check heat map at {width}x{height}")
    # A window of radius max(h, w) already spans the whole map; a larger radius means nothing and
    # an absurd one (a damaged checkpoint's 10^9) would overflow the window arithmetic.
    radius = config.shrink_radius if config.shrink_radius is not None else network.architecture.shrink_radius
    widest = max(height // stride, width // stride)
    if radius > widest:
        source = "--shrink-radius" if config.shrink_radius is not None else "the checkpoint's shrink radius"
        raise BadInput(f"{source} {radius} exceeds the {width // stride}x{height // stride} re-check map at "
                       f"{width}x{height}, which a radius of {widest} already spans; pass --shrink-radius 1 to {widest}")  # fmt: skip


# --- export.json ---------------------------------------------------------------------------------


def source_description(loaded: LoadedCheckpoint, seed: int | None) -> dict[str, Any]:
    """How verify rebuilds the PyTorch network: the checkpoint's path, or random weights' recipe."""
    if loaded.random_weights:
        return {
            "kind": SOURCE_RANDOM,
            "variant": loaded.architecture.variant,
            "seed": seed,
            "architecture": loaded.architecture.to_dict(),
        }
    path = loaded.source_path.resolve() if loaded.source_path is not None else None
    return {"kind": SOURCE_CHECKPOINT, "path": str(path), "format": loaded.source_format}


def engine_meta(loaded: LoadedCheckpoint, config: ExportConfig, seed: int | None) -> EngineMeta:
    """export.json of an export of `loaded` with `config` (seed: of random weights, else None)."""
    arch = loaded.architecture
    network = loaded.network
    width, height = config.img_size
    route = exporter_route(config.opset)
    extra: dict[str, Any] = {
        "source": source_description(loaded, seed),
        "exporter": {
            "route": route,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "simplifier": f"onnxslim {_onnxslim_version()}",
        },
    }
    if config.precision == "fp16":
        extra["fp16_route"] = FP16_ROUTE
    meta = network.engine_meta(
        input_hw=(height, width),
        topk=config.topk,
        peaks=config.peaks,
        shrink_radius=config.shrink_radius if config.shrink_radius is not None else arch.shrink_radius,
        shrink_window=config.shrink_window,
        max_batch=config.max_batch,
        max_tracklets=config.max_tracklets,
        opset=config.opset,
        precision=config.precision,
        checkpoint_sha256=loaded.source_sha256,
        exporter_version=f"omc {__version__}",
        extra=extra,
    )
    meta.validate()
    return meta


def metadata_props(meta: EngineMeta) -> dict[str, str]:
    """export.json's keys with JSON-encoded values, as the runtime reads ONNX metadata_props."""
    return {key: json.dumps(value, sort_keys=True) for key, value in meta.to_dict().items()}


def _onnxslim_version() -> str:
    import onnxslim

    return str(onnxslim.__version__)


# --- tracing ---------------------------------------------------------------------------------------


def trace_to_onnx(
    module: nn.Module,
    example: Mapping[str, Tensor],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, tuple[int, str, int]],
    opset: int,
) -> onnx.ModelProto:
    """Trace `module` (forward arguments named as `example`'s keys, in order) to ONNX.

    dynamic_axes: input name -> (axis, symbol, largest value), e.g. {"images": (0, "B", 4)}.
    """
    names = list(example)
    args = tuple(example.values())
    route = exporter_route(opset)
    # The exporter prints its progress on stdout, which carries omc's results: log it instead.
    printed = io.StringIO()
    try:
        with exporter_warnings(), torch.no_grad(), contextlib.redirect_stdout(printed), _quiet(QUIET_LOGGERS):
            return _trace(module, names, args, output_names, dynamic_axes, opset, route)
    finally:
        for line in printed.getvalue().splitlines():
            log.debug("exporter: %s", line)


@contextlib.contextmanager
def exporter_warnings() -> Iterator[None]:
    """Inside the block, drop the KNOWN_EXPORT_WARNINGS and log every other warning once, with
    where it was raised (a TracerWarning of a new dynamic condition must not go unseen)."""
    categories = {"TracerWarning": torch.jit.TracerWarning, "UserWarning": UserWarning,
                  "DeprecationWarning": DeprecationWarning, "FutureWarning": FutureWarning}  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for category, message, module in KNOWN_EXPORT_WARNINGS:
            warnings.filterwarnings("ignore", message, categories[category], module)
        try:
            yield
        finally:
            seen: set[tuple[str, str, int]] = set()
            for item in caught:
                key = (str(item.message), item.filename, item.lineno)
                if key not in seen:
                    seen.add(key)
                    log.warning("exporter: %s (%s:%d): %s", item.category.__name__, item.filename, item.lineno, item.message)


@contextlib.contextmanager
def _quiet(names: Sequence[str]) -> Iterator[None]:
    """Raise the given loggers to ERROR for the duration, then restore their levels."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _trace(
    module: nn.Module,
    names: list[str],
    args: tuple[Tensor, ...],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, tuple[int, str, int]],
    opset: int,
    route: str,
) -> onnx.ModelProto:
    if route == DYNAMO_ROUTE:
        shapes: dict[str, Any] = {name: None for name in names}
        for name, (axis, symbol, largest) in dynamic_axes.items():
            # The bound only guides tracing; the runtime enforces the export's limits.
            bound = max(largest, EXAMPLE_BATCH, EXAMPLE_TRACKLETS)
            shapes[name] = {axis: torch.export.Dim(symbol, min=1, max=bound)}
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=opset, input_names=names,
            output_names=list(output_names), dynamic_shapes=shapes, verbose=False,
        )  # fmt: skip
        if program is None:  # not expected with dynamo=True
            raise OmcError("torch.onnx.export returned no program")
        model: onnx.ModelProto = program.model_proto
        written = {o.domain: o.version for o in model.opset_import}.get("", 0)
        if written != opset:
            raise OmcError(f"the exporter wrote opset {written} instead of the requested {opset}")  # a bug in omc
        return model
    axes = {name: {axis: symbol} for name, (axis, symbol, _) in dynamic_axes.items()}
    with tempfile.TemporaryDirectory(prefix="omc-trace-") as folder:
        path = Path(folder) / "graph.onnx"
        torch.onnx.export(
            module, args, str(path), dynamo=False, opset_version=opset, input_names=names,
            output_names=list(output_names), dynamic_axes=axes, do_constant_folding=True,
        )  # fmt: skip
        return onnx.load(str(path))


def _set_signature(values: Sequence[onnx.ValueInfoProto], specs: Mapping[str, TensorSpec], kind: str) -> None:
    """Stamp each graph input/output with its contract dtype and shape; the names must match."""
    names = [value.name for value in values]
    if names != list(specs):
        raise OmcError(f"the traced graph's {kind}s are {names}, the contract's {list(specs)}")  # a bug in omc
    for value in values:
        spec = specs[value.name]
        elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype))
        if value.type.tensor_type.elem_type != elem:
            raise OmcError(f"traced {kind} '{value.name}' has ONNX type {value.type.tensor_type.elem_type}, "
                           f"the contract {spec.dtype}")  # fmt: skip
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(spec.shape):
            raise OmcError(f"traced {kind} '{value.name}' has rank {len(dims)}, the contract {len(spec.shape)}")
        for dim, want in zip(dims, spec.shape):
            if isinstance(want, str):
                dim.Clear()
                dim.dim_param = want
            elif dim.HasField("dim_value") and dim.dim_value != want:
                raise OmcError(f"traced {kind} '{value.name}' has shape {[d.dim_value or d.dim_param for d in dims]}, "
                               f"the contract {list(spec.shape)}")  # fmt: skip
            else:
                dim.Clear()
                dim.dim_value = want


def finish_graph(
    model: onnx.ModelProto, inputs: Mapping[str, TensorSpec], outputs: Mapping[str, TensorSpec], meta: EngineMeta
) -> onnx.ModelProto:
    """Simplify, stamp the contract signature and metadata, and check (full) a traced graph."""
    import onnxslim

    with exporter_warnings():
        slimmed: onnx.ModelProto = onnxslim.slim(model)
    _set_signature(slimmed.graph.input, inputs, "input")
    _set_signature(slimmed.graph.output, outputs, "output")
    # Intermediate shapes were inferred with the tracer's symbols; the checker re-infers them.
    del slimmed.graph.value_info[:]
    onnx.helper.set_model_props(slimmed, metadata_props(meta))
    slimmed.producer_name = "omc"
    slimmed.producer_version = __version__
    try:
        onnx.checker.check_model(slimmed, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise OmcError(f"the exported graph fails onnx.checker: {str(exc).splitlines()[0]}") from None  # a bug
    return slimmed


# --- the two graphs ---------------------------------------------------------------------------------


def export_network(loaded: LoadedCheckpoint, precision: str) -> OMCNetwork:
    """The network the graphs trace: the loaded one (fp32) or its float16 copy (fp16)."""
    return half_precision_network(loaded.network) if precision == "fp16" else loaded.network


def detector_onnx(network: OMCNetwork, meta: EngineMeta) -> onnx.ModelProto:
    """detector.onnx of `network` (built for meta.input_hw) as described by `meta`."""
    height, width = meta.input_hw
    example = {contract.IMAGES: torch.zeros((EXAMPLE_BATCH, height, width, 3), dtype=torch.uint8)}
    outputs = meta.detector_outputs()
    model = trace_to_onnx(
        DetectorGraph(network, meta.topk).eval(), example, list(outputs),
        {contract.IMAGES: (0, contract.BATCH_AXIS, meta.max_batch)}, meta.opset,
    )  # fmt: skip
    return finish_graph(model, meta.detector_inputs(), outputs, meta)


def recheck_onnx(network: OMCNetwork, meta: EngineMeta) -> onnx.ModelProto:
    """recheck.onnx of `network` as described by `meta` (which must record the re-check network)."""
    h, w = meta.map_hw
    e = meta.embedding_dim
    generator = torch.Generator().manual_seed(0)
    id_map = torch.nn.functional.normalize(torch.randn((1, h, w, e), generator=generator), dim=-1)
    example = {
        contract.ID_EMBEDDINGS: id_map,
        contract.RECHECK_FEATURES: torch.randn((1, meta.recheck_channels, h, w), generator=generator),
        contract.RECHECK_BOXES: torch.rand((1, h, w, 4), generator=generator) * 8 * w,
        contract.TRACKLETS: id_map[0, 0, :EXAMPLE_TRACKLETS].clone(),
    }
    graph = RecheckGraph(network, meta.peaks, meta.shrink_radius, meta.shrink_window, meta.global_point).eval()
    outputs = meta.recheck_outputs()
    model = trace_to_onnx(
        graph, example, list(outputs), {contract.TRACKLETS: (0, contract.TRACKLET_AXIS, meta.max_tracklets)}, meta.opset
    )
    return finish_graph(model, meta.recheck_inputs(), outputs, meta)


# --- writing ------------------------------------------------------------------------------------------


class _StagedFolder:
    """Files written under temporary names in `out_dir` (omc.files.PendingFile), renamed together
    by `commit()` in the order they were staged.

    On `discard()` the temporaries are removed, and the folder too when this object created it.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.created: list[Path] = []
        self.staged: list[PendingFile] = []

    def open(self) -> None:
        missing = []
        folder = self.out_dir
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"output folder {self.out_dir} cannot be created ({exc.strerror or exc})") from None
        self.created = missing  # deepest first

    def stage(self, name: str) -> Path:
        """A new empty temporary file for `name` (created with the process's normal permissions)."""
        pending = PendingFile(self.out_dir / name)
        self.staged.append(pending)
        return pending.temporary

    def commit(self) -> None:
        for pending in self.staged:
            pending.commit()
        self.staged = []

    def discard(self) -> None:
        for pending in self.staged:
            pending.discard()
        self.staged = []
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (someone else wrote there) or gone: leave it


def _write_model(folder: _StagedFolder, name: str, build: Any, started: float) -> WrittenFile:
    model: onnx.ModelProto = build()
    path = folder.stage(name)
    try:
        onnx.save(model, str(path))
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot write {folder.out_dir / name} ({exc})") from None
    written = WrittenFile(folder.out_dir / name, time.perf_counter() - started, path.stat().st_size)
    log.info("%s: %.1f s, %.1f MB", written.path, written.seconds, written.nbytes / BYTES_PER_MB)
    return written


def export_engines(
    loaded: LoadedCheckpoint, config: ExportConfig, out_dir: str | Path, *, seed: int | None = None
) -> ExportResult:
    """Write detector.onnx, recheck.onnx (with the re-check network) and export.json into `out_dir`.

    loaded: the checkpoint (or random weights; `seed` is then recorded so verify can rebuild it).
    Its network's input-size constants are rebuilt for config.img_size when they differ.
    Raises BadInput (sizes that do not fit, an unwritable folder); nothing is left half-written.
    """
    out = Path(out_dir)
    width, height = config.img_size
    check_fits(loaded.network, config)
    check_output_folder(out)
    if loaded.network.input_hw != (height, width):
        loaded.network.set_input_hw((height, width))
    meta = engine_meta(loaded, config, seed)
    route = exporter_route(config.opset)
    log.info(
        "exporting %s (%s, %s) at %dx%d, opset %d (%s exporter), K %d, P %d, max batch %d, max tracklets %d",
        loaded.source_path or f"random weights (variant {meta.variant}, seed {seed})", meta.variant, config.precision,
        width, height, config.opset, route, config.topk, config.peaks, config.max_batch, config.max_tracklets,
    )  # fmt: skip
    folder = _StagedFolder(out)
    folder.open()
    files: list[WrittenFile] = []
    try:
        network = export_network(loaded, config.precision)
        started = time.perf_counter()
        files.append(_write_model(folder, contract.DETECTOR_ONNX, lambda: detector_onnx(network, meta), started))
        if meta.has_recheck:
            started = time.perf_counter()
            files.append(_write_model(folder, contract.RECHECK_ONNX, lambda: recheck_onnx(network, meta), started))
        json_path = folder.stage(contract.EXPORT_JSON)  # staged last, so renamed last
        json_path.write_text(meta.to_json() + "\n")
        folder.commit()
    except BaseException:
        folder.discard()
        raise
    if not meta.has_recheck:
        # A re-check engine left from an earlier export would not belong to this one.
        (out / contract.RECHECK_ONNX).unlink(missing_ok=True)
    return ExportResult(out, meta, tuple(files))
