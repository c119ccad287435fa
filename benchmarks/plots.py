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


def _line_chart(plt: Any, series: Mapping[str, list[tuple[float, float]]], labels: tuple[str, str], title: str, path: Path) -> Path:
    """One line per backend of (x, y) points; labels: (x axis, y axis)."""
    figure, axes = plt.subplots(figsize=FIGURE_SIZE)
    for backend, points in series.items():
        axes.plot([x for x, _ in points], [y for _, y in points], marker="o", label=backend)
    axes.set_xlabel(labels[0])
    axes.set_ylabel(labels[1])
    axes.set_title(title)
    axes.legend(fontsize="small")
    saved = _save(figure, path)
    plt.close(figure)
    return saved


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

    recheck = {n: [(e["n"], e["recheck"]["median_ms"]) for e in backends[n]["tracklet_sweep"]] for n in names}
    paths.append(_line_chart(plt, recheck, ("tracklets n", "re-check median ms"), "Re-check cost against the tracklet count",
                             out_dir / f"{name}_recheck.png"))  # fmt: skip
    batch = {n: [(e["batch"], e["per_image_ms"]) for e in backends[n]["batch_sweep"]] for n in names}
    paths.append(_line_chart(plt, batch, ("batch size B", "detector ms per image (median)"), "Detector batch sweep",
                             out_dir / f"{name}_batch.png"))  # fmt: skip
    return paths
