"""The `triton` backend: the engines served by Triton Inference Server, as an `EnginePair`.

The server holds a repository written by `omc triton-repo`. Each frame goes up as ONE request to
its frame model (the letterboxed frame, the frame's tracklets when it has any, and the score
floors), which runs the detector and then the re-check inside the server; only the candidate
and peak rows above the floors come down. A batch of B frames is B concurrent requests; the
server's dynamic batcher runs their detector calls together.

Tensors travel in system shared memory when the server runs on this host (the url names
127.0.0.1, localhost or ::1, and the server can map the regions; the Triton container needs
`--ipc=host` for that), else in the gRPC messages.

Errors: a server that is down, unreachable, not ready or that stops answering raises
`EngineUnavailable` (retryable: the multi-stream runtime retries the stream as it does a live
source); a repository without the model raises `BadInput`; a model that is not omc's, or that
serves a different export than the engine folder given, raises `EngineMismatch`.

`tritonclient` is imported only here, when a pair is opened (omc's `triton` extra).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from omc import contract
from omc.config import TritonClientConfig
from omc.contract import EngineMeta, TensorSpec
from omc.errors import BadInput, EngineMismatch, EngineUnavailable, MissingDependency, OmcError
from omc.runtime.engines import NetworkOutputs

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
# gRPC status codes that mean the server is (for now) out of reach, not that the request is wrong.
UNAVAILABLE_STATUSES = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED")
TRITON_DTYPES = {"uint8": "UINT8", "float32": "FP32"}
CONFIG_DTYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32"}


def import_tritonclient() -> Any:
    """tritonclient.grpc; MissingDependency when the extra is not installed."""
    try:
        import tritonclient.grpc as grpcclient
    except ImportError as exc:
        raise MissingDependency("tritonclient (gRPC)", "triton", str(exc)) from None
    return grpcclient


def _is_local(url: str) -> bool:
    host = url.rsplit(":", 1)[0] if url.count(":") == 1 or url.startswith("[") else url
    return host in LOCAL_HOSTS


@dataclass
class _Slot:
    """Shared-memory regions of one frame in flight: its inputs and its outputs (byte offsets by name)."""

    input_name: str
    input_handle: Any
    input_offsets: dict[str, int]
    output_name: str
    output_handle: Any
    output_offsets: dict[str, int]
    output_bytes: dict[str, int]
    input_size: int
    output_size: int


def _nbytes(spec: TensorSpec, rows: dict[str, int]) -> int:
    """Bytes of the largest array `spec` allows (symbolic axes at their `rows` maximum)."""
    count = 1
    for axis in spec.shape:
        count *= rows[axis] if isinstance(axis, str) else axis
    return count * np.dtype(spec.dtype).itemsize


class TritonEnginePair:
    """An `EnginePair` whose engines run in a Triton server (see the module docstring).

    config: url, model name, shared memory, timeout. expected: the export.json the server must
    serve (None: take the server's). score_floors: (detector, re-check) scores at or below which
    rows are not sent back, normally the tracker's (conf_thres, recheck_score_thres); None sends
    every row. After `open()` (or `open_pair`), `meta` is the served export's EngineMeta and
    `uses_shared_memory` says how tensors travel. `run` is safe to call from several threads.
    `last_timings_ms["detector"]` is the round trip of the batch's requests (both engines, the
    server and the transfers); "recheck" is 0 (it runs inside that round trip).
    """

    def __init__(
        self,
        config: TritonClientConfig = TritonClientConfig(),
        expected: EngineMeta | None = None,
        score_floors: tuple[float, float] | None = None,
    ) -> None:
        self.config = config
        self.expected = expected
        self.score_floors = None if score_floors is None else np.array(score_floors, np.float32)
        self.meta: EngineMeta | None = None
        self.uses_shared_memory = False
        self.last_timings_ms: dict[str, float] = dict.fromkeys(contract.ENGINES, 0.0)
        self._grpc: Any = None
        self._shm: Any = None
        self._client: Any = None
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []
        self._lock = threading.Lock()
        self._free_slots: list[_Slot] = []
        self._all_slots: list[_Slot] = []
        self._prefix = f"omc_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        # Set when the server dropped out: a restarted server has forgotten our regions.
        self._registration_stale = False

    @classmethod
    def open_pair(
        cls,
        config: TritonClientConfig = TritonClientConfig(),
        expected: EngineMeta | None = None,
        score_floors: tuple[float, float] | None = None,
    ) -> tuple["TritonEnginePair", EngineMeta]:
        """Connect and check the served model: (pair, meta of the served export)."""
        pair = cls(config, expected, score_floors)
        return pair, pair.open()

    # --- connecting ------------------------------------------------------------------------------

    def open(self) -> EngineMeta:
        """Connect, check the server, the model and its export; set up shared memory. Returns meta."""
        self._grpc = import_tritonclient()
        url, model = self.config.url, self.config.model_name
        try:
            self._client = self._grpc.InferenceServerClient(url=url)
            self._check_ready()
            served = self._client.get_model_config(model, as_json=True, client_timeout=self.config.timeout_s)["config"]
        except OmcError:
            self.close()
            raise
        except self._exception_type() as exc:
            self.close()
            raise self._error(exc, "connecting to") from None
        try:
            self.meta = self._check_model(served)
            if self.config.shared_memory != "off" and (self.config.shared_memory == "on" or _is_local(url)):
                self._shm = _import_shared_memory()
                self.uses_shared_memory = self._try_shared_memory()
        except BaseException:
            self.close()
            raise
        log.info(
            "Triton %s model '%s': input %dx%d, detector batch up to %d on the server, tensors via %s",
            url, model, self.meta.input_hw[1], self.meta.input_hw[0], self.meta.max_batch,
            "system shared memory" if self.uses_shared_memory else "gRPC",
        )  # fmt: skip
        return self.meta

    def _exception_type(self) -> type[BaseException]:
        from tritonclient.utils import InferenceServerException

        return InferenceServerException

    def _error(self, exc: Any, doing: str) -> OmcError:
        """An InferenceServerException as EngineUnavailable (out of reach) or OmcError (the request failed)."""
        status = str(exc.status()) if hasattr(exc, "status") and exc.status() else ""
        message = exc.message() if hasattr(exc, "message") and exc.message() else str(exc)
        message = " ".join(str(message).split())
        where = f"Triton server at {self.config.url}"
        if status in UNAVAILABLE_STATUSES or "failed to connect" in message.lower() or "unavailable" in message.lower():
            return EngineUnavailable(f"{where} is unreachable while {doing} it ({message}); start it or check --url")
        return OmcError(f"{where}, model '{self.config.model_name}': {doing} it failed ({message})")

    def _check_ready(self) -> None:
        url, model = self.config.url, self.config.model_name
        timeout = self.config.timeout_s
        if not self._client.is_server_live(client_timeout=timeout) or not self._client.is_server_ready(client_timeout=timeout):
            raise EngineUnavailable(f"Triton server at {url} is up but not ready yet; retry when its models have loaded")
        if self._client.is_model_ready(model, client_timeout=timeout):
            return
        index = self._client.get_model_repository_index(as_json=True, client_timeout=timeout).get("models", [])
        states = {entry.get("name"): entry.get("state", "UNKNOWN") for entry in index}
        if model not in states:
            known = ", ".join(sorted(name for name in states if name)) or "none"
            raise BadInput(
                f"Triton server at {url} serves no model '{model}' (its models: {known}); write it with omc triton-repo "
                "into the server's model repository, or name one it serves (model_name)"
            )
        raise EngineUnavailable(f"model '{model}' on the Triton server at {url} is not ready (state {states[model]}); retry later")

    def _check_model(self, served: dict[str, Any]) -> EngineMeta:
        """The served export's EngineMeta, after checking the model's tensors and `expected`."""
        url, model = self.config.url, self.config.model_name
        parameters = served.get("parameters", {})
        text = parameters.get(contract.TRITON_EXPORT_PARAMETER, {}).get("string_value")
        if not text:
            raise EngineMismatch(
                f"model '{model}' on the Triton server at {url} was not written by omc triton-repo "
                f"(its config has no {contract.TRITON_EXPORT_PARAMETER} parameter)"
            )
        try:
            meta = EngineMeta.from_dict(json.loads(text))
        except ValueError as exc:
            raise EngineMismatch(f"model '{model}' at {url}: its {contract.TRITON_EXPORT_PARAMETER} is not readable ({exc})") from None
        inputs, outputs = contract.frame_model_specs(meta)
        problems = _tensor_problems("input", inputs, served.get("input", [])) + _tensor_problems("output", outputs, served.get("output", []))
        if problems:
            raise EngineMismatch(
                f"model '{model}' at {url} does not fit the engine contract ({'; '.join(problems[:3])}); "
                "rewrite the repository with this omc (omc triton-repo)"
            )
        if self.expected is not None:
            from omc.runtime.backends.engine_header import export_differences

            differences = export_differences(meta.to_dict(), self.expected.to_dict())
            if differences:
                raise EngineMismatch(
                    f"model '{model}' at {url} serves a different export than the engine folder "
                    f"({'; '.join(d.replace('in the engine', 'on the server') for d in differences[:3])})"
                )
        self._inputs, self._outputs = inputs, outputs
        return meta

    # --- shared memory ---------------------------------------------------------------------------

    def _try_shared_memory(self) -> bool:
        """Register one slot's regions with the server; False (plain gRPC) where it cannot map them."""
        try:
            slot = self._new_slot()
        except (self._exception_type(), self._shm.SharedMemoryException) as exc:
            if self.config.shared_memory == "on":
                raise OmcError(
                    f"the Triton server at {self.config.url} cannot use this host's shared memory ({exc}); "
                    "run it on this host (a container needs --ipc=host) or use shared memory 'auto' / 'off'"
                ) from None
            log.warning("Triton server at %s cannot map this host's shared memory (%s); sending tensors over gRPC", self.config.url, exc)
            return False
        self._free_slots.append(slot)
        return True

    def _new_slot(self) -> _Slot:
        """Create and register the input and output regions of one frame in flight."""
        assert self.meta is not None
        rows = {
            contract.TRACKLET_AXIS: self.meta.max_tracklets, "k": self.meta.topk, "p": self.meta.peaks,
        }  # fmt: skip
        index = len(self._all_slots)
        in_offsets, offset = {}, 0
        for spec in self._inputs:
            in_offsets[spec.name] = offset
            offset += _nbytes(spec, rows)
        input_size = offset
        out_offsets, out_bytes, offset = {}, {}, 0
        for spec in self._outputs:
            out_offsets[spec.name] = offset
            out_bytes[spec.name] = _nbytes(spec, rows)
            offset += out_bytes[spec.name]
        output_size = offset
        names = (f"{self._prefix}_{index}_in", f"{self._prefix}_{index}_out")
        handles = []
        try:
            for name, size in zip(names, (input_size, output_size)):
                handles.append(self._shm.create_shared_memory_region(name, "/" + name, size))
                self._client.register_system_shared_memory(name, "/" + name, size)
        except BaseException:
            for name, handle in zip(names, handles):
                self._release_region(name, handle)
            raise
        slot = _Slot(names[0], handles[0], in_offsets, names[1], handles[1], out_offsets, out_bytes, input_size, output_size)
        self._all_slots.append(slot)
        return slot

    def _register_again(self) -> None:
        """Register every slot's regions anew (after the server dropped out and maybe restarted)."""
        with self._lock:
            try:
                for slot in self._all_slots:
                    for name, size in ((slot.input_name, slot.input_size), (slot.output_name, slot.output_size)):
                        try:
                            self._client.unregister_system_shared_memory(name)
                        except self._exception_type():
                            pass  # a restarted server does not know it
                        self._client.register_system_shared_memory(name, "/" + name, size)
            except self._exception_type() as exc:
                raise self._error(exc, "registering shared memory with") from None
            self._registration_stale = False

    def _release_region(self, name: str, handle: Any, client: Any = None) -> None:
        try:
            (client or self._client).unregister_system_shared_memory(name)
        except Exception as exc:  # the server may be gone; the region is still ours to free
            log.debug("unregistering %s: %s", name, exc)
        try:
            self._shm.destroy_shared_memory_region(handle)
        except Exception as exc:
            log.debug("destroying %s: %s", name, exc)

    def _take_slot(self) -> _Slot:
        with self._lock:
            if self._free_slots:
                return self._free_slots.pop()
            return self._new_slot()

    def _give_slot(self, slot: _Slot) -> None:
        with self._lock:
            self._free_slots.append(slot)

    # --- running ---------------------------------------------------------------------------------

    def run(self, images: npt.NDArray[np.uint8], tracklets: Sequence[F32 | None]) -> list[NetworkOutputs]:
        """images: uint8 [B, H, W, 3] letterboxed frames; tracklets: per frame float32 [n, E] or None.

        Sends B concurrent requests (any B: the server batches what arrives together, up to its
        max_batch) and returns B NetworkOutputs in order, NumPy arrays the caller owns: detector
        [1, k, ...] rows above the detector floor; recheck [1, p, ...] or None without tracklets.
        """
        if self._client is None or self.meta is None:
            raise OmcError("this Triton engine pair is not open (open() it first, or it was closed)")
        self._check_feeds(images, tracklets)
        if self._registration_stale:
            self._register_again()
        start = time.perf_counter()
        results: list[Any] = [None] * len(images)
        errors: list[Any] = [None] * len(images)
        done = threading.Semaphore(0)
        slots: list[_Slot | None] = []
        answered = False
        try:
            for index, (image, pool) in enumerate(zip(images, tracklets)):
                slot = self._take_slot() if self.uses_shared_memory else None
                slots.append(slot)
                inputs, outputs = self._request(image[None], pool, slot)

                def finished(result: Any, error: Any, index: int = index) -> None:
                    results[index], errors[index] = result, error
                    done.release()

                self._client.async_infer(
                    self.config.model_name, inputs, finished, outputs=outputs, client_timeout=self.config.timeout_s
                )
            for _ in slots:
                if not done.acquire(timeout=self.config.timeout_s + 1.0):
                    raise EngineUnavailable(
                        f"Triton server at {self.config.url} did not answer within {self.config.timeout_s:g} s; "
                        "check that it is running"
                    )
            for error in errors:
                if error is not None:
                    raise self._error(error, "running a frame on")
            answered = True
            frames = [self._outputs_of(result, slot, pool is not None) for result, slot, pool in zip(results, slots, tracklets)]
        except self._exception_type() as exc:
            failure = self._error(exc, "sending a frame to")
            if isinstance(failure, EngineUnavailable):
                self._registration_stale = self.uses_shared_memory
            raise failure from None
        except EngineUnavailable:
            self._registration_stale = self.uses_shared_memory
            raise
        finally:
            # Slots of requests that may still be answered stay out of use (close() frees them).
            settled = answered or all(r is not None or e is not None for r, e in zip(results, errors))
            for slot in slots:
                if slot is not None and settled:
                    self._give_slot(slot)
        self.last_timings_ms = {contract.DETECTOR: (time.perf_counter() - start) * 1e3, contract.RECHECK: 0.0}
        return frames

    def _check_feeds(self, images: npt.NDArray[np.uint8], tracklets: Sequence[F32 | None]) -> None:
        assert self.meta is not None
        height, width = self.meta.input_hw
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (height, width, 3) or len(images) == 0:
            raise BadInput(f"images must be uint8 [B, {height}, {width}, 3] with B >= 1, got {images.dtype} {list(images.shape)}")
        if len(tracklets) != len(images):
            raise BadInput(f"{len(images)} frames but {len(tracklets)} tracklet entries")
        spec = TensorSpec(contract.TRACKLETS, "float32", (contract.TRACKLET_AXIS, self.meta.embedding_dim))
        for pool in tracklets:
            if pool is not None:
                if not self.meta.has_recheck:
                    raise BadInput("tracklets were given, but the served export has no re-check engine")
                spec.check(pool, self.meta.axis_limits())

    def _request(self, image: npt.NDArray[np.uint8], pool: F32 | None, slot: _Slot | None) -> tuple[list[Any], list[Any]]:
        """The inputs and requested outputs of one frame's request (in shared memory when `slot`)."""
        grpc = self._grpc
        feeds: dict[str, np.ndarray] = {contract.IMAGES: np.ascontiguousarray(image)}
        if pool is not None:
            feeds[contract.TRACKLETS] = np.ascontiguousarray(pool, np.float32)
        if self.score_floors is not None:
            feeds[contract.SCORE_FLOORS] = self.score_floors
        inputs = []
        for name, array in feeds.items():
            item = grpc.InferInput(name, list(array.shape), TRITON_DTYPES[array.dtype.name])
            if slot is None:
                item.set_data_from_numpy(array)
            else:
                self._shm.set_shared_memory_region(slot.input_handle, [array], offset=slot.input_offsets[name])
                item.set_shared_memory(slot.input_name, array.nbytes, offset=slot.input_offsets[name])
            inputs.append(item)
        names = list(contract.HOST_DETECTOR_OUTPUTS) + (list(contract.HOST_RECHECK_OUTPUTS) if pool is not None else [])
        outputs = []
        for name in names:
            wanted = grpc.InferRequestedOutput(name)
            if slot is not None:
                wanted.set_shared_memory(slot.output_name, slot.output_bytes[name], offset=slot.output_offsets[name])
            outputs.append(wanted)
        return inputs, outputs

    def _outputs_of(self, result: Any, slot: _Slot | None, rechecked: bool) -> NetworkOutputs:
        """One frame's answer as NetworkOutputs of NumPy arrays (copied out of shared memory)."""

        def array(name: str) -> np.ndarray:
            if slot is None:
                return np.asarray(result.as_numpy(name))
            output = result.get_output(name)
            shape = [int(d) for d in output.shape]
            view = self._shm.get_contents_as_numpy(slot.output_handle, np.float32, shape, offset=slot.output_offsets[name])
            return np.array(view)  # the slot is reused by the next frame

        detector = {name: array(name) for name in contract.HOST_DETECTOR_OUTPUTS}
        recheck = {name: array(name) for name in contract.HOST_RECHECK_OUTPUTS} if rechecked else None
        return NetworkOutputs(detector, recheck)

    def close(self) -> None:
        """Unregister and free the shared memory, close the connection; closing twice is harmless."""
        client, self._client = self._client, None
        if client is None:
            return
        for slot in self._all_slots:
            self._release_region(slot.input_name, slot.input_handle, client)
            self._release_region(slot.output_name, slot.output_handle, client)
        self._all_slots, self._free_slots = [], []
        try:
            client.close()
        except Exception as exc:
            log.debug("closing the Triton client: %s", exc)


def _import_shared_memory() -> Any:
    try:
        import tritonclient.utils.shared_memory as shared_memory
    except ImportError as exc:
        raise MissingDependency("tritonclient's system shared memory module", "triton", str(exc)) from None
    return shared_memory


def _tensor_problems(kind: str, specs: Sequence[TensorSpec], served: Sequence[dict[str, Any]]) -> list[str]:
    """What differs between the contract's tensors and a served model's config entries (names, dtypes, dims)."""
    by_name = {entry.get("name"): entry for entry in served}
    problems = []
    for spec in specs:
        entry = by_name.get(spec.name)
        if entry is None:
            problems.append(f"no {kind} '{spec.name}'")
            continue
        want_dims = [-1 if isinstance(axis, str) else axis for axis in spec.shape]
        dims = [int(d) for d in entry.get("dims", [])]
        if entry.get("data_type") != CONFIG_DTYPES[spec.dtype] or dims != want_dims:
            problems.append(f"{kind} '{spec.name}' is {entry.get('data_type')} {dims}, the contract wants {CONFIG_DTYPES[spec.dtype]} {want_dims}")
    return problems
