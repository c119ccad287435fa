"""Flags built from config dataclasses (omc.flags): types, defaults, renamed errors, recorded words."""

from __future__ import annotations

import argparse

import pytest

from omc.config import BenchConfig, CalibConfig, ExportConfig, StreamConfig, TrackerConfig
from omc.errors import BadInput, InvalidConfig
from omc.flags import ConfigFlags


def parse(flags: ConfigFlags, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    flags.add_to(parser)
    return parser.parse_args(list(argv))


def test_flags_left_out_keep_the_defaults_and_given_ones_override() -> None:
    flags = ConfigFlags(TrackerConfig)
    assert flags.config(parse(flags)) == TrackerConfig()
    args = parse(flags, "--conf-thres", "0.4", "--no-recheck", "--track-buffer", "60")
    assert flags.config(args) == TrackerConfig(conf_thres=0.4, recheck=False, track_buffer=60)
    assert flags.given(args) == {"conf_thres": 0.4, "track_buffer": 60, "recheck": False}


def test_a_given_flag_overrides_a_base_built_elsewhere() -> None:
    flags = ConfigFlags(StreamConfig, only=("batch_wait_ms", "max_batch"))
    base = StreamConfig(queue_frames=2, max_batch=3)  # e.g. a streams file's [runtime] table
    assert flags.config(parse(flags, "--batch-wait-ms", "5"), base) == StreamConfig(queue_frames=2, max_batch=3, batch_wait_ms=5.0)


def test_lists_sizes_none_and_repeats() -> None:
    flags = ConfigFlags(BenchConfig, only=("backends", "tracklets", "clip_size"), names={"backends": "--backend"})
    args = parse(flags, "--backend", "ort", "--backend", "trt,torch", "--tracklets", "0,5", "--clip-size", "640x360")
    assert flags.config(args) == BenchConfig(backends=("ort", "trt", "torch"), tracklets=(0, 5), clip_size=(640, 360))
    calib = ConfigFlags(CalibConfig, only=("keep_float",))
    assert calib.config(parse(calib, "--keep-float", "none")).keep_float == ()
    with pytest.raises(argparse.ArgumentError):
        parse(flags, "--tracklets", "1,x")


def test_a_refused_value_names_the_flag_and_the_config_names_the_field() -> None:
    flags = ConfigFlags(CalibConfig, only=("frames", "holdout_frames"), names={"holdout_frames": "--holdout"})
    with pytest.raises(BadInput) as caught:
        flags.config(parse(flags, "--holdout", "-1"))
    assert str(caught.value) == "--holdout must be 0 or more, got -1"
    with pytest.raises(InvalidConfig) as refused:
        CalibConfig(holdout_frames=-1)
    assert str(refused.value) == "CalibConfig.holdout_frames must be 0 or more, got -1"
    assert refused.value.field == "holdout_frames"


def test_help_states_every_default_and_choices() -> None:
    parser = argparse.ArgumentParser()
    ConfigFlags(ExportConfig).add_to(parser)
    ConfigFlags(TrackerConfig).add_to(parser)
    text = " ".join(parser.format_help().split())
    assert "--img-size WxH" in text and "(default: 1088x608)" in text
    assert "{reference,paper}" in text and "(default: the checkpoint's stored radius, else 3 as the reference)" in text
    assert "Cluster-DIoU NMS: a box's threshold" in text and "(4.2)" not in text  # citations stay in the source


def test_words_rebuild_a_config_from_the_defaults() -> None:
    flags = ConfigFlags(BenchConfig, only=("backends", "frames", "batch"), names={"backends": "--backend"})
    config = BenchConfig(backends=("ort",), batch=(1, 8))
    assert flags.words(config) == ["--backend", "ort", "--batch", "1,8"]
    assert flags.config(parse(flags, *flags.words(config))) == config
    tracker = ConfigFlags(TrackerConfig, only=("recheck",))
    assert tracker.words(TrackerConfig(recheck=False)) == ["--no-recheck"]
