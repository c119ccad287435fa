"""Prove that the TensorRT type check has teeth: mypy must reject misused TensorRT API.

TensorRT cannot be installed on CI (and TensorRT for RTX runs nothing without a GPU), so mypy
against tensorrt-stubs is the only thing that catches a misspelt or misused TensorRT call before
a user's GPU does. A check that silently degrades to `Any` (stubs missing, module typed as Any,
an import-untyped skip) would pass everything, so this script copies the TensorRT modules to a
scratch folder, injects one mistake per copy, and runs mypy on each:

- unmodified copies must pass;
- `execute_async_v3` misspelt as `execute_async_v9` must fail (attribute of IExecutionContext);
- `set_tensor_address` given a str instead of the int device pointer must fail;
- `build_serialized_network` misspelt in the builder must fail (attribute of Builder).

Exit status 0 only when every expectation holds. Run after prepare_trt_stubs.py (make typecheck).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKEND = REPO_ROOT / "runtime" / "backends" / "trt.py"
BUILDER = REPO_ROOT / "export" / "trt" / "builder.py"
# Scratch module names (top-level modules in the scratch folder).
COPIES = {BACKEND: "trt_backend_copy.py", BUILDER: "trt_builder_copy.py"}


@dataclass(frozen=True)
class Mutation:
    """Replace the first match of `pattern` in `source` by `replacement`; mypy must then report
    an error containing `expected` in that copy."""

    name: str
    source: Path
    pattern: str
    replacement: str
    expected: str


MUTATIONS = (
    Mutation(
        "misspelt execute_async_v3",
        BACKEND,
        r"\.execute_async_v3\(",
        ".execute_async_v9(",
        '"IExecutionContext" has no attribute "execute_async_v9"',
    ),
    Mutation(
        "set_tensor_address given a str",
        BACKEND,
        r"\.set_tensor_address\((\w+), (\w+)\)",
        r".set_tensor_address(\1, str(\2))",
        'Argument 2 to "set_tensor_address" of "IExecutionContext" has incompatible type "str"; expected "int"',
    ),
    Mutation(
        "misspelt build_serialized_network",
        BUILDER,
        r"\.build_serialized_network\(",
        ".build_serialised_network(",
        '"Builder" has no attribute "build_serialised_network"',
    ),
)


def run_mypy(folder: Path, cache: Path) -> tuple[int, str]:
    files = [str(folder / name) for name in COPIES.values()]
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(REPO_ROOT / "pyproject.toml"),
        "--cache-dir",
        str(cache),
        # Judge the copies only: errors in the modules they import belong to `make typecheck`'s main run.
        "--follow-imports",
        "silent",
        "--no-error-summary",
        *files,
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr


def write_copies(folder: Path, mutation: Mutation | None) -> None:
    folder.mkdir(parents=True)
    for source, name in COPIES.items():
        text = source.read_text()
        if mutation is not None and mutation.source == source:
            text, count = re.subn(mutation.pattern, mutation.replacement, text, count=1)
            if count != 1:
                raise SystemExit(f"could not inject '{mutation.name}': no match for {mutation.pattern} in {source}")
        (folder / name).write_text(text)


def main() -> int:
    scratch = Path(tempfile.mkdtemp(prefix="omc-trt-api-"))
    failures = []
    try:
        cache = scratch / ".mypy_cache"
        clean = scratch / "unmodified"
        write_copies(clean, None)
        status, output = run_mypy(clean, cache)
        if status == 0:
            print("ok: unmodified TensorRT modules pass mypy")
        else:
            failures.append(f"unmodified copies fail mypy:\n{output}")
        for index, mutation in enumerate(MUTATIONS):
            folder = scratch / f"mutation_{index}"
            write_copies(folder, mutation)
            status, output = run_mypy(folder, cache)
            if status != 0 and mutation.expected in output:
                print(f"ok: mypy rejects {mutation.name}")
            else:
                failures.append(f"mypy did not reject {mutation.name} (exit {status}):\n{output}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
