"""Malicious checkpoints: refused with UnsafeCheckpoint naming the global, and their payload never runs.

Each payload would create a marker file; the tests check the marker does not exist afterwards.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from omc.errors import CheckpointError, UnsafeCheckpoint
from omc.export.checkpoint import PickledObject, load_checkpoint, resolve_global


def _text(value: str) -> bytes:
    encoded = value.encode()
    return b"X" + struct.pack("<I", len(encoded)) + encoded  # BINUNICODE


def call_pickle(module: str, name: str, *args: str, as_list: bool = False) -> bytes:
    """Protocol-2 pickle of {'model': module.name(*args)} (or module.name([args]) with as_list)."""
    call_args = b"](" + b"".join(_text(a) for a in args) + b"e" if as_list else b"".join(_text(a) for a in args)
    call = b"c" + f"{module}\n{name}\n".encode() + b"(" + call_args + b"tR"  # GLOBAL, MARK, args, TUPLE, REDUCE
    return b"\x80\x02}" + _text("model") + call + b"s."  # PROTO 2, EMPTY_DICT, key, value, SETITEM, STOP


def torch_zip_with(data_pkl: bytes, path: Path) -> Path:
    """A torch.save zip archive whose data.pkl is replaced by `data_pkl`."""
    torch.save({"model": {}}, path)
    with zipfile.ZipFile(path) as source:
        entries = {name: source.read(name) for name in source.namelist()}
    pickle_name = next(name for name in entries if name.endswith("/data.pkl"))
    entries[pickle_name] = data_pkl
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for name, data in entries.items():
            target.writestr(name, data)
    return path


def assert_refused(path: Path, global_name: str, marker: Path) -> None:
    with pytest.raises(UnsafeCheckpoint) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert f"'{global_name}'" in message and str(path) in message
    assert "\n" not in message
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize(
    ("module", "name", "payload", "as_list"),
    [
        ("os", "system", "touch {marker}", False),
        ("posix", "system", "touch {marker}", False),
        ("builtins", "eval", "open({marker!r}, 'w').close()", False),
        ("builtins", "exec", "open({marker!r}, 'w').close()", False),
        ("__builtin__", "eval", "open({marker!r}, 'w').close()", False),
        ("subprocess", "Popen", "touch|{marker}", True),
        ("builtins", "getattr", "x", False),
        ("torch", "load", "{marker}", False),
        ("models.mot.cstrack", "attempt_load", "{marker}", False),
    ],
)
def test_calls_outside_the_allow_list_are_refused(
    tmp_path: Path, module: str, name: str, payload: str, as_list: bool
) -> None:
    marker = tmp_path / "pwned"
    args = payload.format(marker=str(marker)).split("|")
    path = torch_zip_with(call_pickle(module, name, *args, as_list=as_list), tmp_path / "evil.pt")
    assert_refused(path, f"{module}.{name}", marker)


def test_the_crafted_archive_is_otherwise_readable(tmp_path: Path) -> None:
    # Control: the same construction with an allowed global reads fine (and holds no model), so the
    # refusals above come from the global, not from a broken file.
    path = torch_zip_with(call_pickle("collections", "OrderedDict"), tmp_path / "benign.pt")
    with pytest.raises(CheckpointError, match="has no model"):
        load_checkpoint(path)


class _ShellPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_payload_nested_in_a_module_tree_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    holder = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1))
    holder.hook = _ShellPayload(marker)  # a plain attribute, deep inside the pickled model
    torch.save({"epoch": 1, "model": holder}, tmp_path / "nested.pt")
    assert_refused(tmp_path / "nested.pt", f"{os.system.__module__}.system", marker)


def test_legacy_format_payload_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "legacy.pt"
    torch.save({"model": _ShellPayload(marker)}, path, _use_new_zipfile_serialization=False)
    assert_refused(path, f"{os.system.__module__}.system", marker)


def test_refusal_comes_before_any_lookup() -> None:
    # A module that is not even importable is refused by name, not by an import attempt.
    with pytest.raises(UnsafeCheckpoint, match="'no_such_module.anything'"):
        resolve_global("no_such_module", "anything")
    assert "no_such_module" not in sys.modules
    with pytest.raises(UnsafeCheckpoint):
        resolve_global("torch.nn.modules.module", "Module")  # torch.nn classes only by the listed names
    with pytest.raises(UnsafeCheckpoint):
        resolve_global("subprocess", "run")


def test_allowed_globals_are_inert_records_or_data_constructors() -> None:
    siam = resolve_global("models.mot.cstrack", "SiamMot")
    assert issubclass(siam, PickledObject) and siam.pickled_class == "models.mot.cstrack.SiamMot"
    conv = resolve_global("torch.nn.modules.conv", "Conv2d")
    assert issubclass(conv, PickledObject) and conv is not torch.nn.Conv2d
    record = siam()
    record.__setstate__({"_modules": {}, "opt": None})  # state is stored, nothing else happens
    assert record.attributes()["opt"] is None
    assert resolve_global("__builtin__", "set") is set
    assert resolve_global("torch._utils", "_rebuild_tensor_v2") is torch._utils._rebuild_tensor_v2


def test_load_in_a_fresh_process_never_imports_reference_modules(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = torch_zip_with(call_pickle("os", "system", f"touch {marker}"), tmp_path / "evil.pt")
    code = (
        "import sys\n"
        "from omc.errors import UnsafeCheckpoint\n"
        "from omc.export.checkpoint import load_checkpoint\n"
        "try:\n"
        f"    load_checkpoint({str(path)!r})\n"
        "except UnsafeCheckpoint as exc:\n"
        "    print('refused', exc)\n"
        "print('models' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused") and result.stdout.strip().endswith("False")
    assert not marker.exists()
