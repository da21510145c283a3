"""The mespot-spot benchmark on a tiny budget: a 2 s recording, one flow method, one run. The
recording decodes, the checkpoint is what mespot-spot loads with the configured flow settings,
the report holds every figure, its factors come from the measured times, and results go only
where they are told."""

import json

import cv2
import pytest
from omegaconf import OmegaConf

from mespot.bench import spot as bench
from mespot.bench.common import DEFAULT_OUT
from mespot.cli.common import CONFIG_PATH
from mespot.module import load_spotter

METHOD = "dis"  # the fastest flow


def snapshot(folder) -> dict:
    """Every file under `folder` with its size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[dict, str, bool]:
    """(spot.json, spot.md, whether experiments/bench stayed as it was) of a tiny run."""
    out = tmp_path_factory.mktemp("bench")
    before = snapshot(DEFAULT_OUT) if DEFAULT_OUT.exists() else {}
    args = ["--seconds", "2", "--rounds", "1", "--methods", METHOD, "--out", str(out)]
    assert bench.main(args) == 0
    after = snapshot(DEFAULT_OUT) if DEFAULT_OUT.exists() else {}
    assert sorted(p.name for p in out.iterdir()) == ["spot.json", "spot.md"]
    saved = json.loads((out / "spot.json").read_text())
    return saved, (out / "spot.md").read_text(), before == after


def test_the_recording_is_a_webcam_sized_video_that_decodes(tmp_path):
    recording = bench.write_recording(tmp_path, seconds=1.0)
    capture = cv2.VideoCapture(recording["path"])
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == recording["frames"] == 30
    assert frames[0].shape == (480, 640, 3)
    assert frames[0].std() > 10  # a rendered face, not a blank frame


def test_the_checkpoint_loads_with_the_configured_flow(tmp_path):
    info = bench.build_checkpoint("tvl1", tmp_path / "tvl1.ckpt")
    model = load_spotter(tmp_path / "tvl1.ckpt")
    conf = OmegaConf.load(f"{CONFIG_PATH}/preprocessing/default.yaml")
    expected = OmegaConf.to_container(conf.flow.tvl1)
    assert model.hparams.preprocessing["flow_method"] == "tvl1"
    assert model.hparams.preprocessing["flow_params"] == expected
    assert info["preprocessing"]["flow_params"] == expected
    assert model.hparams.backbone == {"name": "vovnet", "width": 0.25}  # the CPU size
    inputs = model.hparams.inputs
    assert set(inputs) == {"window", "stride", "use_flow", "frame_diffs", "rest_span", "trained_on"}
    assert inputs["frame_diffs"] == []  # the bench checkpoint feeds frames and flow only


def test_report_holds_every_figure(report):
    saved, _, _ = report
    keys = {"method", "flow_params", "seconds", "frames", "fps", "video_seconds", "realtime",
            "frames_per_s", "preprocessing_seconds", "flow_pairs_per_s", "model_frames_per_s",
            "process_seconds", "peak_rss_mb", "phases", "windows", "window", "meets_target",
            "attempts", "checkpoint", "load_average_start", "load_average_end",
            "cv2_threads", "torch_threads"}  # fmt: skip
    assert {"command", "environment", "budget", "recording", "rows", "verdict"} <= saved.keys()
    env = saved["environment"]
    assert env["load_average_at_start"] is not None and env["load_average_at_end"] is not None
    assert env["commit"] and env["cv2"] == cv2.__version__
    (row,) = saved["rows"]
    assert keys <= row.keys()
    assert row["method"] == METHOD and row["frames"] == saved["recording"]["frames"] == 60
    assert set(row["phases"]) == set(bench.PHASES)
    assert row["peak_rss_mb"] > 0 and row["process_seconds"] > row["seconds"] > 0
    assert len(row["attempts"]) == 1
    assert saved["verdict"]["default_realtime"] is None  # tvl1 was not run


def test_factors_come_from_the_measured_times(report):
    saved, _, _ = report
    (row,) = saved["rows"]
    assert row["video_seconds"] == pytest.approx(row["frames"] / row["fps"])
    assert row["realtime"] == pytest.approx(row["video_seconds"] / row["seconds"])
    assert row["frames_per_s"] == pytest.approx(row["frames"] / row["seconds"])
    assert row["meets_target"] == (row["realtime"] >= bench.TARGET)
    assert sum(row["phases"].values()) == pytest.approx(row["seconds"])
    assert row["flow_pairs_per_s"] == pytest.approx(row["frames"] / row["phases"]["flow"])
    assert row["attempts"][0]["realtime"] == row["realtime"]


def test_markdown_shows_the_row_and_the_command(report):
    saved, text, _ = report
    (row,) = saved["rows"]
    assert (
        f"| {METHOD} | preset=medium | {row['seconds']:.1f} | **{row['realtime']:.2f}** |" in text
    )
    assert saved["command"] in text
    assert "load average" in text


def test_nothing_is_written_to_experiments(report):
    _, _, unchanged = report
    assert unchanged
