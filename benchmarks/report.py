"""Benchmark results as files: JSON (the record), a Markdown report, and the README's section.

A result is one JSON object (schema `RESULT_SCHEMA`): `environment`, `config`, `model` (input
size, variant, FLOPs), `ceiling`, `backends` (per backend: `stages.<stage>.median_ms` / `p90_ms`,
`fps`, `environment`, sweeps, comparisons; or `status: skipped` with a `reason`) and
`host_postprocess`. `write_result` writes `<results>/<name>.json` and `<name>.md`.

The README's performance section (between `README_START` and `README_END`) is regenerated from
every recorded result in the results folder by `update_readme`: results sorted by name, numbers
in fixed formats, no clock times, so the same results always give the same text. Each result
names the command that produced it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omc.errors import BadInput
from omc.files import replacing

from omc.benchmarks.environment import CPU_FLAGS
from omc.benchmarks.stages import STAGES_AND_TOTAL

RESULT_SCHEMA = "omc-bench/1"
README_START = "<!-- perf:start -->"
README_END = "<!-- perf:end -->"
# The reference path speed-ups are measured against: PyTorch eager on the CPU for CPU backends,
# the same path on the GPU (float16, as the reference runs there) for GPU backends.
REFERENCE_BACKEND = "torch"
GPU_REFERENCE_BACKEND = "torch-cuda"
# The paper's speeds (PyTorch, RTX 2080Ti, 1088 x 608; omc-reference.md section 7).
PAPER_FPS = {"OMC": 12.8, "CSTrack": 15.8}
# Where a backend's host-device copies are counted when they are not in its h2d / d2h rows.
COPY_NOTES: dict[tuple[str, ...], str] = {
    ("torch-cuda", "torch-cuda-graph"): "The PyTorch CUDA path thresholds and suppresses on the GPU, as the reference does, and copies "
                  "only the kept rows and their embeddings to the host: its d2h row is near 0 and those copies "
                  "count in nms_fusion.",
    ("trt",): "TensorRT copies the frame up and the compact outputs down inside its detector and re-check calls "
           "(pinned buffers, one stream), so its h2d and d2h rows are near 0 and those copies count in the "
           "detector and re-check rows.",
}
# Backends that run on a GPU (compared with GPU_REFERENCE_BACKEND and the paper's speeds).
GPU_BACKENDS = ("torch-cuda", "torch-cuda-graph", "trt")
BACKEND_TITLES = {
    "torch": "PyTorch eager (reference path)",
    "torch-cuda": "PyTorch CUDA fp16 eager (reference path on a GPU)",
    "torch-cuda-graph": "PyTorch CUDA fp16, channels-last, CUDA graph",
    "ort": "ONNX Runtime fp32",
    "ort-int8": "ONNX Runtime INT8",
    "trt": "TensorRT",
}


# --- files ---------------------------------------------------------------------------------------


def write_text_atomically(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`."""
    with replacing(path) as temporary:
        temporary.write_text(text)


def write_result(result: Mapping[str, Any], results_dir: Path, name: str, json_copy: Path | None = None) -> list[Path]:
    """Write `<results_dir>/<name>.json` and `.md` (and the JSON to `json_copy` too); returns the paths."""
    text = json.dumps(result, indent=2, sort_keys=True) + "\n"
    json_path = results_dir / f"{name}.json"
    md_path = results_dir / f"{name}.md"
    write_text_atomically(json_path, text)
    write_text_atomically(md_path, markdown_report(result))
    written = [json_path, md_path]
    if json_copy is not None and json_copy.resolve() != json_path.resolve():
        write_text_atomically(json_copy, text)
        written.append(json_copy)
    return written


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every recorded result (`*.json` with this schema) in `results_dir`, sorted by name."""
    results = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise BadInput(f"{path} is not a readable benchmark result ({exc})") from None
        if isinstance(data, dict) and data.get("schema") == RESULT_SCHEMA:
            results.append(data)
    return sorted(results, key=lambda r: str(r.get("name", "")))


# --- formatting ----------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def speedup(backends: Mapping[str, Any], name: str) -> tuple[str, float] | None:
    """(reference backend, its median frame time / `name`'s): CPU backends against `torch`, GPU
    backends against `torch-cuda`; None when either did not run."""
    reference = GPU_REFERENCE_BACKEND if name in GPU_BACKENDS else REFERENCE_BACKEND
    ours, theirs = backends.get(name, {}), backends.get(reference, {})
    if ours.get("status") != "ok" or theirs.get("status") != "ok":
        return None
    return reference, theirs["stages"]["total"]["median_ms"] / ours["stages"]["total"]["median_ms"]


def _speedup(result: Mapping[str, Any], name: str) -> str:
    """'2.70x (vs torch)', or '-' when the backend's reference path did not run."""
    found = speedup(result["backends"], name)
    return "-" if found is None else f"{found[1]:.2f}x (vs {found[0]})"


def paper_lines(result: Mapping[str, Any]) -> list[str]:
    """The GPU backends' OMC and CSTrack FPS beside the paper's (PyTorch on an RTX 2080Ti); [] when
    no GPU backend ran. Different GPUs: a compass, not a comparison."""
    gpu = {name: b for name, b in _ok(result).items() if name in GPU_BACKENDS}
    if not gpu:
        return []
    cells = "; ".join(
        f"{name}: OMC {b['omc_vs_cstrack']['fps_omc']:.1f} FPS ({b['omc_vs_cstrack']['fps_omc'] / PAPER_FPS['OMC']:.1f}x the paper's), "
        f"CSTrack {b['omc_vs_cstrack']['fps_cstrack']:.1f} FPS" for name, b in gpu.items())  # fmt: skip
    return [f"The paper: OMC {PAPER_FPS['OMC']} FPS, CSTrack {PAPER_FPS['CSTrack']} FPS (PyTorch, RTX 2080Ti, "
            f"1088x608). This run: {cells}."]  # fmt: skip


def _signed_pct(value: float) -> str:
    """A change as a percentage with its sign: '+6.6%', '-18.6%'."""
    return f"{100 * value:+.1f}%"


def _ordered(result: Mapping[str, Any]) -> dict[str, Any]:
    """The result's backends in the run's order (config.backends), whatever order the JSON keeps."""
    backends = result["backends"]
    order = [name for name in result["config"]["backends"] if name in backends]
    return {name: backends[name] for name in order + sorted(set(backends) - set(order))}


def _ok(result: Mapping[str, Any]) -> dict[str, Any]:
    return {name: b for name, b in _ordered(result).items() if b.get("status") == "ok"}


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _describe_run(result: Mapping[str, Any]) -> str:
    env = result["environment"]
    cpu = env["cpu"]
    flags = ", ".join(name for name in CPU_FLAGS if cpu["flags"].get(name)) or "none"
    model = result["model"]
    height, width = model["input_hw"]
    gpus = ", ".join(g["name"] for g in env.get("gpus", [])) or "none"
    text = (
        f"{cpu['model']} ({cpu['usable_cores']} usable cores; {flags}), GPU: {gpus}; "
        f"{env['threads']} threads (NumPy BLAS: {env['blas_threads']}); model {model['variant']} ({model['weights']}) "
        f"at {width}x{height}, {result['config']['frames']} frames after {result['config']['warmup']} warm-up, "
        f"{model['frames']}"
    )
    load = env.get("load_average")
    if load:
        text += (f"; backends interleaved frame by frame, load average (1 min) {load['before'][0]:.2f} before, "
                 f"{load['after'][0]:.2f} after")
    if result.get("note"):
        text += f". Note: {result['note']}"
    return text


def stage_table(result: Mapping[str, Any]) -> list[str]:
    """Stages (rows) by backend (columns): median / p90 ms, then FPS and speed-up vs the reference path."""
    ok = _ok(result)
    names = list(ok)
    rows = [[stage] + [f"{_ms(ok[n]['stages'][stage]['median_ms'])} / {_ms(ok[n]['stages'][stage]['p90_ms'])}" for n in names]
            for stage in STAGES_AND_TOTAL]  # fmt: skip
    rows.append(["FPS"] + [f"{ok[n]['fps']:.2f}" for n in names])
    rows.append(["speed-up vs the reference path"] + [_speedup(result, n) for n in names])
    rows.append(["re-check share of the frame"] + [_pct(ok[n]["recheck_share_of_total"]) for n in names])
    return _table(["stage (median / p90 ms)"] + names, rows)


def markdown_report(result: Mapping[str, Any]) -> str:
    """The full Markdown report of one result."""
    ok = _ok(result)
    headline = result["config"]["headline_tracklets"]
    lines = [f"# omc bench: {result['name']}", "", f"Command: `{result['environment']['command']}`", "",
             _describe_run(result) + ".", ""]  # fmt: skip
    for name, backend in _ordered(result).items():
        if backend.get("status") != "ok":
            lines.append(f"- {name}: skipped ({backend.get('reason', 'no reason recorded')})")
    lines += ["", f"## Per-stage latency (n = {headline} synthetic tracklets)", ""] + stage_table(result)
    paper = paper_lines(result)
    if paper:
        lines += [""] + paper
    for names, note in COPY_NOTES.items():
        if any(name in ok for name in names):
            lines += ["", note]
    ceiling = result["ceiling"]
    flops = result["model"]["flops"]
    lines += ["", "## Achieved rate against the machine's ceiling", "",
              f"Ceiling: {ceiling['gflops']:.1f} GFLOP/s ({ceiling['library']} sgemm {ceiling['size']}^3, "
              f"{ceiling['threads']} threads; by library: "
              + ", ".join(f"{k} {v:.1f}" for k, v in sorted(ceiling["by_library"].items())) + "). "
              f"Detector {flops['detector_gflop']:.1f} GFLOP per frame, re-check {flops['recheck_gflop'][str(headline)]:.2f} GFLOP "
              f"at n = {headline} (FLOPs from the fp32 ONNX graphs by shape inference). INT8 backends do the same "
              "operations in 8-bit integers, which VNNI / AMX CPUs run several times faster than float32 "
              "multiply-adds: their share of the float32 ceiling can exceed 100%."
              + _gpu_ceiling_text(result), ""]  # fmt: skip
    lines += _table(
        ["backend", "detector GFLOP/s", "% of ceiling", "re-check GFLOP/s", "% of ceiling"],
        [[n, f"{b['gflops']['detector']:.1f}", _pct(b["gflops"]["detector_of_ceiling"]),
          f"{b['gflops']['recheck']:.1f}", _pct(b["gflops"]["recheck_of_ceiling"])] for n, b in ok.items()],
    )  # fmt: skip
    lines += ["", "## Re-check cost", "",
              f"FLOPs: the re-check engine at n = {headline} is {_pct(flops['recheck_vs_detector'])} of the detector; "
              f"OMC (detector + re-check) is {_pct(flops['omc_vs_cstrack'] - 1)} more than CSTrack (the detector minus "
              f"the re-check's frame-only heads, which take {flops['recheck_heads_gflop']:.1f} GFLOP of it).", ""]  # fmt: skip
    lines += _table(
        ["backend", f"re-check / detector (n = {headline}): in the frame", "engine alone", "OMC fps", "CSTrack fps",
         "OMC frame time vs CSTrack"],
        [[n, _pct(b["recheck_vs_detector"]["share"]), _pct(b["recheck_vs_detector"].get("share_engine_alone", 0.0)),
          f"{b['omc_vs_cstrack']['fps_omc']:.2f}",
          f"{b['omc_vs_cstrack']['fps_cstrack']:.2f}", _signed_pct(b['omc_vs_cstrack']['time_increase'])] for n, b in ok.items()],
    )  # fmt: skip
    counts = [entry["n"] for entry in next(iter(ok.values()))["tracklet_sweep"]] if ok else []
    lines += ["", "Re-check median ms by tracklet count n (0 = no call):", ""]
    lines += _table(["backend"] + [f"n = {n}" for n in counts],
                    [[n] + [_ms(e["recheck"]["median_ms"]) for e in b["tracklet_sweep"]] for n, b in ok.items()])
    lines += ["", "## Detector batch sweep (ms per image, median)", ""]
    batches = [entry["batch"] for entry in next(iter(ok.values()))["batch_sweep"]] if ok else []
    lines += _table(["backend"] + [f"B = {b}" for b in batches],
                    [[n] + [_ms(e["per_image_ms"]) for e in b["batch_sweep"]] for n, b in ok.items()])
    lines += ["", "## Host post-processing (NMS + fusion + association)", ""] + host_lines(result["host_postprocess"])
    return "\n".join(lines) + "\n"


def _gpu_ceiling_text(result: Mapping[str, Any]) -> str:
    """' GPU backends ...' when the run measured the GPU's ceiling, else ''."""
    gpu = result.get("ceiling_gpu")
    if not gpu:
        return ""
    return (f" GPU backends are rated against the GPU's ceiling: {gpu['gflops']:.0f} GFLOP/s ({gpu['library']} "
            f"{gpu['precision']} GEMM {gpu['size']}^3 on {gpu['device']}).")


def host_lines(host: Mapping[str, Any]) -> list[str]:
    workload = host["workload"]
    lines = [f"Synthetic crowd: {workload['tracks']} tracks, {workload['detections']} detections and "
             f"{workload['peaks']} re-check peaks per frame, {workload['frames']} frames; target < "
             f"{host['target_ms']:.1f} ms for omc's runtime.", ""]  # fmt: skip
    rows = []
    for key, title in (("runtime", "omc runtime (NumPy)"), ("torch_reference_path", "PyTorch reference path"),
                       ("reference_tracker", "reference tracker (JDETracker.update)")):  # fmt: skip
        entry = host.get(key, {"status": "skipped", "reason": "not measured"})
        if entry.get("status") != "ok":
            rows.append([title, "-", "-", f"skipped: {entry.get('reason', '')}"])
            continue
        total = entry["stages"]["total"]
        agree = host.get("agreement", {}).get(f"runtime_vs_{key}")
        note = f"same tracks as the runtime on {_pct(agree)} of frames" if agree is not None else ""
        rows.append([title, _ms(total["median_ms"]), _ms(total["p90_ms"]), note])
    return lines + _table(["implementation", "median ms", "p90 ms", "notes"], rows)


# --- README --------------------------------------------------------------------------------------


def readme_section(results: list[dict[str, Any]]) -> str:
    """The README's performance section for the recorded results (deterministic text)."""
    lines = [
        "Generated from `benchmarks/results/*.json` by `omc bench-report` (do not edit by hand). "
        "Each run times every backend on the same frames and threads, side by side with the PyTorch "
        "eager path that mirrors the reference implementation; the full reports (stage tables, "
        "sweeps, charts) sit beside the JSON.",
    ]
    if not results:
        lines += ["", "No results recorded yet: run `make benchmark`."]
    for result in results:
        backends = _ok(result)
        headline = result["config"]["headline_tracklets"]
        lines += ["", f"### {result['name']}", "", _describe_run(result) + ".", "",
                  f"Command: `{result['environment']['command']}`", ""]  # fmt: skip
        rows = []
        for name, b in backends.items():
            rows.append([
                BACKEND_TITLES.get(name, name),
                f"{_ms(b['stages']['total']['median_ms'])} / {_ms(b['stages']['total']['p90_ms'])}",
                f"{b['fps']:.2f}",
                _speedup(result, name),
                _ms(b["stages"]["detector"]["median_ms"]),
                f"{_ms(b['stages']['recheck']['median_ms'])} ({_pct(b['recheck_vs_detector']['share'])})",
                f"{b['gflops']['detector']:.0f} ({_pct(b['gflops']['detector_of_ceiling'])})",
                _signed_pct(b['omc_vs_cstrack']['time_increase']),
            ])
        lines += _table(
            ["backend", "frame ms (median / p90)", "FPS", "speed-up", "detector ms",
             f"re-check ms at n = {headline} (of detector)", "detector GFLOP/s (of ceiling)", "OMC vs CSTrack time"],
            rows,
        )  # fmt: skip
        skipped = [f"{n}: {b.get('reason', '')}" for n, b in _ordered(result).items() if b.get("status") != "ok"]
        if skipped:
            lines += ["", "Skipped: " + "; ".join(skipped)]
        paper = paper_lines(result)
        if paper:
            lines += [""] + paper
        ceiling, flops = result["ceiling"], result["model"]["flops"]
        lines += ["", f"Ceiling {ceiling['gflops']:.0f} GFLOP/s ({ceiling['library']} sgemm).{_gpu_ceiling_text(result)} FLOPs: re-check at "
                  f"n = {headline} is {_pct(flops['recheck_vs_detector'])} of the detector; OMC is "
                  f"{_signed_pct(flops['omc_vs_cstrack'] - 1)} over CSTrack.", ""]  # fmt: skip
        lines += host_lines(result["host_postprocess"])
    return "\n".join(lines)


def replace_section(text: str, section: str) -> str:
    """`text` with everything between README_START and README_END replaced by `section`."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise BadInput(f"README has no '{README_START}' ... '{README_END}' markers; add them where the section goes")
    return text[: start + len(README_START)] + "\n" + section.rstrip("\n") + "\n" + text[end:]


def update_readme(readme: Path, results_dir: Path) -> bool:
    """Regenerate the README's performance section from `results_dir`; True when the file changed."""
    try:
        text = readme.read_text()
    except OSError as exc:
        raise BadInput(f"cannot read {readme} ({exc.strerror or exc})") from None
    updated = replace_section(text, readme_section(load_results(results_dir)))
    if updated == text:
        return False
    write_text_atomically(readme, updated)
    return True
