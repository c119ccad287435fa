"""`omc bench-streams` on toy engines: the sweep, live and soak parts run and record what they promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from toy_engines import write_toy_engines

from omc.cli import main


def test_bench_streams_records_sweep_live_and_soak(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engines = tmp_path / "engines"
    write_toy_engines(engines)
    results = tmp_path / "results"
    argv = [
        "bench-streams", "--onnx", str(engines), "--parts", "sweep", "live", "soak", "--streams", "1,2",
        "--seconds", "1", "--rounds", "2", "--live-streams", "2", "--live-seconds", "2", "--soak-streams", "2",
        "--soak-frames", "300", "--results-dir", str(results), "--name", "toy",
    ]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((results / "toy.json").read_text())
    assert result["schema"] == "omc-bench-streams/2" and "flags" in result["environment"]["cpu"]
    sweep = result["sweep"]
    assert [row["streams"] for row in sweep] == [1, 2]
    for row in sweep:
        for mode in ("runtime", "runtime_overlap", "naive"):
            assert row[mode]["frames_per_second"] > 0 and len(row[mode]["frames_per_second_rounds"]) == 2
            assert 0 < row[mode]["latency_p50_ms"] <= row[mode]["latency_p99_ms"]
        assert row["ratio"] == pytest.approx(row["runtime"]["frames_per_second"] / row["naive"]["frames_per_second"])
        assert row["overlap_gain"] == pytest.approx(
            row["runtime_overlap"]["frames_per_second"] / row["runtime"]["frames_per_second"]
        )
        # Every tracked frame went through a detector batch.
        assert sum(int(k) * v for k, v in row["runtime"]["batch_sizes"].items()) >= row["runtime"]["frames"] > 0
        assert len(row["load_average"]) == 3
    live = result["live"]
    assert live["frames_tracked"] > 0 and live["minutes"][0]["frames"] > 0
    soak = result["soak"]
    assert soak["frames"] == 300 and len(soak["rss_mb"]) == 4  # sampled at 0, 100, 200, 300 frames
    report = (results / "toy.md").read_text()
    assert "| 2 |" in report and "Soak: 300 frames" in report
    assert "runtime against the naive loop" in capsys.readouterr().out
