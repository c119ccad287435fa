"""Charts of a benchmark result (PNG, matplotlib from the `bench` extra).

`write_plots(result, out_dir, name)` draws, for the backends that ran:
- `<name>_stages.png`: median time per stage, stacked, one bar per backend;
- `<name>_fps.png`: end-to-end frames per second per backend, OMC and CSTrack side by side;
- `<name>_recheck.png`: the re-check engine's median time against the tracklet count n;
- `<name>_batch.png`: detector milliseconds per image against the batch size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from omc.errors import MissingDependency

from omc.benchmarks.stages import STAGES

# Figure size (inches) and resolution of every chart.
FIGURE_SIZE = (8.0, 4.5)
DPI = 120


def require_matplotlib() -> Any:
    """matplotlib.pyplot on the Agg backend; MissingDependency naming the bench extra when absent."""
    try:
        import matplotlib
    except ImportError:
        raise MissingDependency("matplotlib", "bench", "needed for --plot") from None
    matplotlib.use("Agg")  # files only; never opens a window
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


def write_plots(result: Mapping[str, Any], out_dir: Path, name: str) -> list[Path]:
    """Draw the four charts into `out_dir`; returns their paths (none when no backend ran)."""
    plt = require_matplotlib()
    backends = {n: b for n, b in result["backends"].items() if b.get("status") == "ok"}
    if not backends:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(backends)
    headline = result["config"]["headline_tracklets"]
    paths = []

    figure, axes = plt.subplots(figsize=FIGURE_SIZE)
    bottom = [0.0] * len(names)
    for stage in STAGES:
        values = [backends[n]["stages"][stage]["median_ms"] for n in names]
        axes.bar(names, values, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, values)]
    axes.set_ylabel("median ms per frame")
    axes.set_title(f"Stage breakdown (n = {headline} tracklets)")
    axes.legend(fontsize="small", ncol=2)
    paths.append(_save(figure, out_dir / f"{name}_stages.png"))
    plt.close(figure)

    figure, axes = plt.subplots(figsize=FIGURE_SIZE)
    positions = range(len(names))
    width = 0.4
    axes.bar([p - width / 2 for p in positions], [backends[n]["omc_vs_cstrack"]["fps_omc"] for n in names], width, label=f"OMC (n = {headline})")
    axes.bar([p + width / 2 for p in positions], [backends[n]["omc_vs_cstrack"]["fps_cstrack"] for n in names], width, label="CSTrack (no re-check)")
    axes.set_xticks(list(positions), names)
    axes.set_ylabel("frames per second (1000 / median frame ms)")
    axes.set_title("End-to-end FPS per backend")
    axes.legend(fontsize="small")
    paths.append(_save(figure, out_dir / f"{name}_fps.png"))
    plt.close(figure)

    figure, axes = plt.subplots(figsize=FIGURE_SIZE)
    for n in names:
        sweep = backends[n]["tracklet_sweep"]
        axes.plot([e["n"] for e in sweep], [e["recheck"]["median_ms"] for e in sweep], marker="o", label=n)
    axes.set_xlabel("tracklets n")
    axes.set_ylabel("re-check median ms")
    axes.set_title("Re-check cost against the tracklet count")
    axes.legend(fontsize="small")
    paths.append(_save(figure, out_dir / f"{name}_recheck.png"))
    plt.close(figure)

    figure, axes = plt.subplots(figsize=FIGURE_SIZE)
    for n in names:
        sweep = backends[n]["batch_sweep"]
        axes.plot([e["batch"] for e in sweep], [e["per_image_ms"] for e in sweep], marker="o", label=n)
    axes.set_xlabel("batch size B")
    axes.set_ylabel("detector ms per image (median)")
    axes.set_title("Detector batch sweep")
    axes.legend(fontsize="small")
    paths.append(_save(figure, out_dir / f"{name}_batch.png"))
    plt.close(figure)
    return paths
