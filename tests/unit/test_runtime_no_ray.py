"""The embedded runtime never imports Ray (the 'cluster' extra), and `omc --help` works without it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from paths import REPO_ROOT

# Runs in a fresh interpreter where any import of ray fails, as if the extra were not installed.
SCRIPT = textwrap.dedent(
    """
    import importlib
    import pkgutil
    import sys

    class NoRay:
        def find_spec(self, name, path=None, target=None):
            if name == "ray" or name.startswith("ray."):
                raise ImportError(f"{name} is blocked for this test")
            return None

    sys.meta_path.insert(0, NoRay())

    import omc.runtime

    modules = [m.name for m in pkgutil.walk_packages(omc.runtime.__path__, "omc.runtime.")]
    skipped = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # an optional GPU library (tensorrt, cuda) missing here
            if "ray" in str(exc):
                raise
            skipped.append(name)
    # What an app around the runtime imports, and the CLI with every subcommand registered.
    import omc.apps.track, omc.apps.streams_file, omc.apps.results
    import omc.apps.cluster.placement, omc.apps.cluster.worker, omc.apps.cluster.status
    from omc.cli import build_parser

    build_parser().parse_args(["cluster", "status"])
    assert "omc.runtime.streams" in sys.modules and "omc.runtime.stream_reader" in sys.modules
    assert not any(m == "ray" or m.startswith("ray.") for m in sys.modules), "ray was imported"
    print("ok", len(modules), "skipped:", ",".join(skipped) or "none")
    """
)


def test_runtime_never_imports_ray():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok "), result.stdout
    assert int(result.stdout.split()[1]) >= 10  # it walked the runtime's modules


def test_cluster_commands_without_ray_name_the_extra():
    script = SCRIPT.split("import omc.runtime")[0] + textwrap.dedent(
        """
        from omc.cli import main
        raise SystemExit(main(["cluster", "status", "--address", "127.0.0.1:1"]))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: Ray is not installed; it comes with omc's 'cluster' extra: pip install '.[cluster]' (ray is blocked for this test)"
    ]
