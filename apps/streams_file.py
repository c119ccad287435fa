"""The streams file: every stream of a deployment and its options, in TOML.

`omc track --streams streams.toml` and `omc cluster run streams.toml` read it::

    [runtime]                    # optional: StreamConfig fields (batching, queues, reconnects)
    batch_wait_ms = 10

    [defaults]                   # optional: every stream starts from these options
    mode = "auto"
    [defaults.tracker]           # TrackerConfig fields
    conf_thres = 0.4

    [[streams]]
    name = "door"                # unique; output files are named after it
    url = "rtsp://10.0.0.7/stream1"
    [streams.tracker]
    track_buffer = 60

    [[streams]]
    name = "lobby"
    url = "videos/lobby.mp4"     # files and folders: relative to the streams file
    save_video = "lobby.mp4"     # relative to the output folder
    node = "site=b"              # omc cluster only: a node label, node id or IP (omc.apps.cluster)

    [cluster]                    # omc cluster only (see omc.apps.cluster)
    workers = 2

Stream keys: name, url (a path, a live URL or a camera index), mode (auto / every / latest),
frame_rate, max_frames, save_video, tracker (a table of TrackerConfig fields), and for the
cluster node and resources. Anything else is refused, naming the key, so a misspelt option never
silently keeps its default.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from omc.config import StreamConfig, TrackerConfig
from omc.errors import BadInput, InvalidConfig
from omc.runtime.sources import is_live_location, live_source_name
from omc.runtime.streams import StreamSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Keys of a stream table that `omc cluster` reads and `omc track` ignores.
PLACEMENT_KEYS = ("node", "resources")
_STREAM_KEYS = ("name", "url", "mode", "frame_rate", "max_frames", "save_video", "tracker") + PLACEMENT_KEYS
_SECTIONS = ("runtime", "defaults", "streams", "cluster")


@dataclass(frozen=True)
class StreamEntry:
    """One stream of the file: its spec, where its overlay video goes (relative to the output
    folder; None for none), and its placement keys for the cluster (node, resources)."""

    spec: StreamSpec
    save_video: Path | None = None
    placement: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamsFile:
    """A parsed streams file: the streams, the runtime config, and the raw [cluster] table."""

    path: Path
    streams: list[StreamEntry]
    config: StreamConfig
    cluster: Mapping[str, Any]


def load_streams_file(path: str | Path) -> StreamsFile:
    """Read and check a streams file (see the module docstring); BadInput naming what is wrong."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"streams file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read streams file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"streams file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise BadInput(f"streams file {path}: unknown section(s) {', '.join(unknown)}; known: {', '.join(_SECTIONS)}")
    config = dataclass_from_table(StreamConfig, _table(data, "runtime", path), f"{path} [runtime]")
    defaults = _table(data, "defaults", path)
    streams_data = data.get("streams", [])
    if not isinstance(streams_data, list) or not streams_data:
        raise BadInput(f"streams file {path} has no [[streams]] entries")
    entries = [_entry(item, defaults, path, number) for number, item in enumerate(streams_data, 1)]
    names = [entry.spec.name for entry in entries]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise BadInput(f"streams file {path}: stream names must be unique; repeated: {', '.join(duplicates)}")
    return StreamsFile(path, entries, config, _table(data, "cluster", path))


def _table(data: Mapping[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise BadInput(f"streams file {path}: [{key}] must be a table")
    return value


def _entry(item: Any, defaults: Mapping[str, Any], path: Path, number: int) -> StreamEntry:
    where = f"{path} stream {number}"
    if not isinstance(item, dict):
        raise BadInput(f"{where} must be a table")
    merged: dict[str, Any] = {**defaults, **item}
    merged["tracker"] = {**defaults.get("tracker", {}), **item.get("tracker", {})}
    unknown = sorted(set(merged) - set(_STREAM_KEYS))
    if unknown:
        raise BadInput(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(_STREAM_KEYS)}")
    if "url" not in merged:
        raise BadInput(f"{where} has no url (a video file, image folder, sequence, live URL or camera index)")
    source = _source(merged["url"], path.parent, where)
    name = merged.get("name") or (live_source_name(source) if isinstance(source, (int, str)) else Path(source).stem)
    tracker = dataclass_from_table(TrackerConfig, merged["tracker"], f"{where} [tracker]")
    try:
        spec = StreamSpec(
            str(name), source, mode=merged.get("mode", "auto"), frame_rate=merged.get("frame_rate"),
            tracker=tracker, max_frames=merged.get("max_frames"),
        )  # fmt: skip
    except TypeError as exc:
        raise BadInput(f"{where}: {exc}") from None
    save_video = merged.get("save_video")
    if save_video is not None and not isinstance(save_video, str):
        raise BadInput(f"{where}: save_video must be a file name")
    placement = {key: merged[key] for key in PLACEMENT_KEYS if key in merged}
    return StreamEntry(spec, Path(save_video) if save_video else None, placement)


def _source(value: Any, base: Path, where: str) -> str | Path | int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadInput(f"{where}: url must be a string or a camera index")
    if isinstance(value, int) or is_live_location(value):
        return value
    location = Path(value).expanduser()
    # Not checked for existence here: on a cluster the file may live on a worker's machine only
    # (omc track opens every file source before it starts).
    return location if location.is_absolute() else base / location


def dataclass_from_table(cls: Any, values: Mapping[str, Any], where: str) -> Any:
    """`cls(**values)` after checking every key is a field and every value has its default's type;
    BadInput naming `where` and the key otherwise (an int is accepted for a float field), also
    when the config refuses a value."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise BadInput(f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    for name, value in values.items():
        default = known[name].default
        expected = type(default)
        ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise BadInput(f"{where}: {name} must be {expected.__name__}, got {value!r}")
    try:
        return cls(**values)
    except InvalidConfig as exc:
        raise exc.renamed(f"{where}: {exc.field}") from None
