"""`omc bench` end to end on the toy engines: the result's keys, reports, charts, skips, README.

One benchmark run (module fixture, tiny frame counts) is shared by the tests that read its files;
no test asserts a timing, only that every number the result promises is there and consistent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from omc.benchmarks.report import README_END, README_START, RESULT_SCHEMA, readme_section, update_readme
from omc.benchmarks.stages import STAGES_AND_TOTAL
from omc.cli import main
from toy_engines import write_toy_engines

TRACKLETS = (0, 3, 8)
BATCHES = (1, 2)
FAST = ["--frames", "2", "--warmup", "1", "--batch-repeats", "1", "--host-frames", "3", "--ceiling-size", "64"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `omc bench` over the toy engines with torch, ort, ort-int8 (a copy of the toy export) and trt."""
    root = tmp_path_factory.mktemp("bench")
    engines = root / "engines"
    write_toy_engines(engines)
    shutil.copytree(engines, engines / "int8-cpu")  # stands in for calib's INT8 graphs
    results = root / "results"
    argv = [
        "bench", "--onnx", str(engines), "--backend", "torch,ort,ort-int8,trt", "--tracklets", "0,3,8",
        "--headline-tracklets", "3", "--batch", "1,2", "--results", str(results), "--name", "toy",
        "--json", str(root / "copy.json"), *FAST,
    ]  # fmt: skip
    plot = _has_matplotlib()
    if plot:
        argv.append("--plot")
    assert main(argv) == 0
    return {"root": root, "results": results, "plot": plot, "result": json.loads((results / "toy.json").read_text())}


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_result_has_every_stage_fps_and_environment(toy_run: dict[str, Any]) -> None:
    result = toy_run["result"]
    assert result["schema"] == RESULT_SCHEMA and result["name"] == "toy"
    assert result["config"]["tracklets"] == list(TRACKLETS)
    for name in ("ort", "ort-int8"):
        backend = result["backends"][name]
        assert backend["status"] == "ok"
        assert set(backend["stages"]) == set(STAGES_AND_TOTAL)
        for stats in backend["stages"].values():
            assert stats["p90_ms"] >= stats["median_ms"] >= 0.0
        stage_sum = sum(backend["stages"][s]["mean_ms"] for s in STAGES_AND_TOTAL if s != "total")
        assert backend["stages"]["total"]["mean_ms"] == pytest.approx(stage_sum)
        assert backend["fps"] == pytest.approx(1e3 / backend["stages"]["total"]["median_ms"])
        env = backend["environment"]
        for key in ("cpu", "libraries", "command", "threads", "input_size", "engine_precision"):
            assert key in env
        assert {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx"} <= set(env["cpu"]["flags"])
        assert env["input_size"] == "320x192"
        assert env["backend"]["engine_dir"].endswith("int8-cpu" if name == "ort-int8" else "engines")
        assert "onnxruntime" in env["libraries"]
        assert env["command"].startswith("omc bench --onnx ")
        # The backends ran interleaved; the load average around their frames sits beside the result.
        assert [len(env["load_average"][when]) for when in ("before", "after")] == [3, 3]


def test_sweeps_comparisons_and_flops(toy_run: dict[str, Any]) -> None:
    result = toy_run["result"]
    ort = result["backends"]["ort"]
    assert [entry["n"] for entry in ort["tracklet_sweep"]] == list(TRACKLETS)
    assert ort["tracklet_sweep"][0]["recheck"]["median_ms"] == 0.0  # n = 0: no re-check call
    assert all(entry["recheck"]["median_ms"] > 0 for entry in ort["tracklet_sweep"][1:])
    assert [entry["batch"] for entry in ort["batch_sweep"]] == list(BATCHES)
    for entry in ort["batch_sweep"]:
        assert entry["per_image_ms"] == pytest.approx(entry["median_ms"] / entry["batch"])
    cstrack = ort["omc_vs_cstrack"]["cstrack_stages"]
    assert cstrack["recheck"]["median_ms"] == 0.0 and ort["stages"]["recheck"]["median_ms"] > 0
    assert ort["recheck_vs_detector"]["share"] == pytest.approx(
        ort["stages"]["recheck"]["median_ms"] / ort["stages"]["detector"]["median_ms"])
    flops = result["model"]["flops"]
    assert flops["detector_gflop"] > 0 and set(flops["recheck_gflop"]) == {"0", "3", "8"}
    assert flops["recheck_gflop"]["8"] > flops["recheck_gflop"]["3"] > 0
    assert ort["gflops"]["detector"] == pytest.approx(flops["detector_gflop"] / (ort["stages"]["detector"]["median_ms"] / 1e3))
    ceiling = result["ceiling"]
    assert ceiling["size"] == 64 and ceiling["gflops"] == max(ceiling["by_library"].values())
    host = result["host_postprocess"]
    assert host["runtime"]["status"] == "ok" and host["reference_tracker"]["status"] == "skipped"
    assert host["agreement"]["runtime_vs_torch_reference_path"] == 1.0


def test_unavailable_backends_are_skipped_with_a_reason(toy_run: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    backends = toy_run["result"]["backends"]
    assert backends["trt"]["status"] == "skipped"
    assert "GPU" in backends["trt"]["reason"] or "TensorRT" in backends["trt"]["reason"]
    # The toy export records no PyTorch model: the torch backend says so and the others still ran.
    assert backends["torch"]["status"] == "skipped" and "--weights" in backends["torch"]["reason"]
    assert "speedup_vs_torch" not in backends["ort"]


def test_reports_and_charts_are_written(toy_run: dict[str, Any]) -> None:
    results: Path = toy_run["results"]
    markdown = (results / "toy.md").read_text()
    assert "| stage (median / p90 ms) | ort | ort-int8 |" in markdown
    assert "trt: skipped" in markdown and "Host post-processing" in markdown
    assert "backends interleaved frame by frame, load average (1 min) " in markdown
    assert json.loads((toy_run["root"] / "copy.json").read_text()) == toy_run["result"]
    charts = sorted(p.name for p in results.glob("toy_*.png"))
    if toy_run["plot"]:
        assert charts == ["toy_batch.png", "toy_fps.png", "toy_recheck.png", "toy_stages.png"]
        assert all((results / c).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for c in charts)


def test_readme_section_is_deterministic(toy_run: dict[str, Any], tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(toy_run["results"], results)
    second = dict(toy_run["result"], name="another")
    (results / "another.json").write_text(json.dumps(second))
    (results / "unrelated.json").write_text(json.dumps({"not": "a result"}))
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n## Performance\n\n{README_START}\nold text\n{README_END}\n\n## After\n")
    assert update_readme(readme, results) is True
    first = readme.read_text()
    assert update_readme(readme, results) is False  # same results, same text
    assert readme.read_text() == first
    assert first.startswith("# title\n") and first.endswith(f"{README_END}\n\n## After\n") and "old text" not in first
    assert first.index("### another") < first.index("### toy")  # sorted by name, not by file date
    assert f"`{toy_run['result']['environment']['command']}`" in first
    section = readme_section([toy_run["result"]])
    assert section == readme_section([json.loads(json.dumps(toy_run["result"]))])
    assert "ONNX Runtime fp32" in section


def test_bench_report_regenerates_from_results(toy_run: dict[str, Any], tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(toy_run["results"], results)
    (results / "toy.md").unlink()
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_START}\n{README_END}\n")
    assert main(["bench-report", "--results", str(results), "--readme", str(readme)]) == 0
    assert (results / "toy.md").read_text() == (toy_run["results"] / "toy.md").read_text()
    assert "### toy" in readme.read_text()


def test_readme_without_markers_is_a_user_error(tmp_path: Path, toy_run: dict[str, Any]) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    result = subprocess.run(
        [sys.executable, "-m", "omc", "bench-report", "--results", str(toy_run["results"]), "--readme", str(readme)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: README has no '<!-- perf:start -->'")
    assert "Traceback" not in result.stderr
    assert readme.read_text() == "# no markers\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--backend", "ort,cuda"], "--backend cuda is not one of torch, torch-cuda, torch-cuda-graph, ort, ort-int8, trt"),
        (["--batch", "1,8"], "--batch 8 exceeds the export's max batch 4"),
        (["--tracklets", "0,100"], "--tracklets 100 exceeds the export's max of 64 tracklets"),
        (["--frames", "0"], "--frames must be at least 1"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path: Path, extra: list[str], message: str) -> None:
    engines = tmp_path / "engines"
    write_toy_engines(engines)
    result = subprocess.run(
        [sys.executable, "-m", "omc", "bench", "--onnx", str(engines), "--backend", "ort", "--results",
         str(tmp_path / "results"), *FAST, *extra],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


def test_an_export_of_other_weights_is_refused(tmp_path: Path) -> None:
    """--weights with an export made from something else: refused before any timing, so the torch
    backend and the engines never run two different models under one name."""
    engines, checkpoint = tmp_path / "engines", tmp_path / "mine.pt"
    write_toy_engines(engines)
    checkpoint.write_bytes(b"not the weights the toy engines came from")
    result = subprocess.run(
        [sys.executable, "-m", "omc", "bench", "--onnx", str(engines), "--weights", str(checkpoint), "--backend", "ort",
         "--results", str(tmp_path / "results"), *FAST],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {engines} holds an export of ") and f"not of {checkpoint}" in last
    assert "Traceback" not in result.stderr and not (tmp_path / "results").exists()


def test_plot_without_matplotlib_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    engines = tmp_path / "engines"
    write_toy_engines(engines)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    status = main(["bench", "--onnx", str(engines), "--backend", "ort", "--plot", "--results", str(tmp_path / "r"), *FAST])
    assert status == 2
    assert "matplotlib is not installed; it comes with omc's 'bench' extra" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before the run, nothing written


def test_frames_from_a_source_folder(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    engines, frames = tmp_path / "engines", tmp_path / "frames"
    write_toy_engines(engines)
    frames.mkdir()
    rng = np.random.default_rng(0)
    for index in range(2):  # fewer frames than the run needs: the source restarts at its end
        cv2.imwrite(str(frames / f"{index + 1:06d}.png"), rng.integers(0, 256, (120, 200, 3), dtype=np.uint8))
    results = tmp_path / "results"
    assert main(["bench", "--onnx", str(engines), "--backend", "ort", "--source", str(frames), "--tracklets", "0,3",
                 "--headline-tracklets", "3",
                 "--results", str(results), "--name", "src", *FAST]) == 0  # fmt: skip
    result = json.loads((results / "src.json").read_text())
    assert result["model"]["frames"] == f"source {frames}"
    assert result["backends"]["ort"]["frames"] == 2
    assert f"--source {frames}" in result["environment"]["command"]
