"""Prepare what `python -m mypy` reads from outside the repository. Idempotent; run by `make setup`
and again by `make typecheck`.

1. Repair the installed tensorrt-stubs (10.13.0.35.1), which mypy cannot use as shipped:
   - some signatures name a parameter `in`, a Python keyword (a syntax error in a .pyi);
   - `add_scale_nd` has a parameter without a default after parameters with defaults;
   - the package has no `py.typed`, so mypy skips it as untyped.
   The repair edits the INSTALLED copy only (the stubs are third-party text: the repository never
   carries a copy). Errors mypy still finds inside the stubs are silenced per module in
   pyproject.toml's [tool.mypy] overrides; calls from omc into TensorRT stay fully checked.
2. Lay out build/typecheck/omc/{export,runtime,apps,calib,benchmarks} as links to the top-level
   folders. The `omc` namespace maps folders to subpackages (omc.export = export/), which pip's
   editable install implements with an import hook that mypy cannot follow; pyproject.toml points
   mypy_path at this tree.

Exit status: 0 done, 2 tensorrt-stubs not installed or still unparsable after the repair.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from importlib import metadata
from pathlib import Path

STUBS_DISTRIBUTION = "tensorrt-stubs"
STUBS_PIN = "tensorrt-stubs==10.13.0.35.1"
STUB_PACKAGES = ("tensorrt", "tensorrt_bindings")
REPO_ROOT = Path(__file__).resolve().parents[2]
TREE_ROOT = REPO_ROOT / "build" / "typecheck"
# omc subpackages that live in top-level folders (pyproject.toml [tool.setuptools] package-dir).
SUBPACKAGE_FOLDERS = ("export", "runtime", "apps", "calib", "benchmarks")

# A parameter named `in` in a def line: `(self, in: ...` or `, in: ...`.
_KEYWORD_PARAMETER = re.compile(r"(?<=[(,])(\s*)in(\s*:)")


def _split_parameters(text: str) -> list[str]:
    """Split a parameter list at top-level commas (brackets nest)."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _repair_defaults(line: str) -> str:
    """Give `= ...` to parameters that follow a defaulted one in a one-line def."""
    match = re.match(r"^(\s*def \w+\()(.*)(\)\s*->.*)$", line)
    if not match:
        return line
    head, params, tail = match.groups()
    parts = _split_parameters(params)
    seen_default = False
    for index, part in enumerate(parts):
        name = part.strip()
        if not name or name.startswith("*") or name == "/":
            if name.startswith("*"):
                break  # keyword-only parameters may lack defaults
            continue
        if "=" in name:
            seen_default = True
        elif seen_default:
            parts[index] = part + " = ..."
    return head + ",".join(parts) + tail


def repair_stub_text(text: str) -> str:
    """The stub source with keyword-named parameters renamed and missing defaults added."""
    lines = []
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("def "):
            ending = line[len(line.rstrip("\r\n")) :]
            body = _KEYWORD_PARAMETER.sub(r"\1in_\2", line.rstrip("\r\n"))
            line = _repair_defaults(body) + ending
        lines.append(line)
    return "".join(lines)


def stub_package_dirs() -> list[Path]:
    try:
        distribution = metadata.distribution(STUBS_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise SystemExit(
            f"{STUBS_DISTRIBUTION} is not installed; install it with: .venv/bin/pip install --no-deps {STUBS_PIN}"
        ) from None
    found = {Path(str(distribution.locate_file(f))).parent for f in distribution.files or () if f.parts[0] in STUB_PACKAGES}
    return sorted(found)


def repair_stubs() -> int:
    """Repair every stub file and add py.typed; returns how many files changed."""
    changed = 0
    for folder in stub_package_dirs():
        for stub in sorted(folder.glob("*.pyi")):
            # newline="" keeps the file's own line endings (the stubs ship CRLF).
            with open(stub, encoding="utf-8", newline="") as source:
                text = source.read()
            repaired = repair_stub_text(text)
            if repaired != text:
                with open(stub, "w", encoding="utf-8", newline="") as target:
                    target.write(repaired)
                changed += 1
            try:
                ast.parse(repaired, filename=str(stub))
            except SyntaxError as exc:
                print(f"{stub}:{exc.lineno}: still not valid Python after the repair: {exc.msg}", file=sys.stderr)
                raise SystemExit(2) from None
        marker = folder / "py.typed"
        if not marker.exists():
            marker.write_text("")
            changed += 1
    return changed


def lay_out_source_tree() -> Path:
    """build/typecheck/omc/<folder> -> <repo>/<folder> for each subpackage folder."""
    package = TREE_ROOT / "omc"
    package.mkdir(parents=True, exist_ok=True)
    for folder in SUBPACKAGE_FOLDERS:
        link = package / folder
        target = os.path.relpath(REPO_ROOT / folder, package)
        if link.is_symlink() and os.readlink(link) == target:
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
    return TREE_ROOT


def main() -> int:
    changed = repair_stubs()
    tree = lay_out_source_tree()
    print(f"tensorrt-stubs ready ({changed} file(s) changed); mypy source tree at {tree.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
