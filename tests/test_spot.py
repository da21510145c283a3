"""`mespot-spot` on a recording: a real checkpoint from a tiny fold, a real video file written
with OpenCV, the same frames as a folder, and the errors a user meets first."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY
from console import assert_user_error

from mespot.errors import UserError
from mespot.spot import COLUMNS, spot

BIN = Path(sys.executable).parent
FPS = 30.0


def tiny_checkpoint(tiny_mock, tmp_path_factory) -> Path:
    """The session's checkpoint of a tiny fold (test subject s16), trained once for every test
    module that spots (this one, test_spot_faces.py): kept in the session's temporary folder."""
    logs = tmp_path_factory.getbasetemp() / "spot-checkpoint"
    found = sorted(logs.glob("train/runs/*/checkpoints/last.ckpt"))
    if found:
        return found[0]
    root, cache_dir = tiny_mock
    logs.mkdir(exist_ok=True)
    command = [str(BIN / "mespot-train"), "debug=default", f"data.root={root}",
               f"paths.cache_dir={cache_dir}", f"paths.log_dir={logs}", "data.test_subject=s16",
               "callbacks.progress=null", *TINY]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=logs)
    assert result.returncode == 0, result.stderr[-3000:]
    (ckpt,) = logs.glob("train/runs/*/checkpoints/last.ckpt")
    return ckpt


@pytest.fixture(scope="module")
def checkpoint(tiny_mock, tmp_path_factory):
    return tiny_checkpoint(tiny_mock, tmp_path_factory)


@pytest.fixture(scope="module")
def recording(tiny_mock, tmp_path_factory):
    """(video file, folder of the same decoded frames): 150 frames of a mock face at 30 fps."""
    folder = tmp_path_factory.mktemp("recording")
    frames = sorted((tiny_mock[0] / "rawpic" / "s16").glob("*/img*.jpg"))[:150]
    height, width = cv2.imread(str(frames[0])).shape[:2]
    video = folder / "face.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (width, height))
    for path in frames:
        writer.write(cv2.imread(str(path)))
    writer.release()
    images = folder / "frames"
    images.mkdir()
    capture = cv2.VideoCapture(str(video))
    count = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        cv2.imwrite(str(images / f"img{count:05d}.png"), frame)  # lossless: the same pixels
        count += 1
    assert count == len(frames)
    return video, images


def spot_cli(*args, cwd):
    return subprocess.run([str(BIN / "mespot-spot"), "progress=false", *args],
                          capture_output=True, text=True, timeout=600, cwd=cwd)  # fmt: skip


def test_a_video_file_gives_a_table_of_intervals_in_frames_and_seconds(
    checkpoint, recording, tmp_path
):
    video, _ = recording
    ground_truth = tmp_path / "truth.csv"
    ground_truth.write_text("onset,offset,type\n20,40,mae\n90,96,micro\n")
    result = spot_cli(f"video={video}", f"ckpt={checkpoint}", f"out={tmp_path / 'out'}",
                      f"ground_truth={ground_truth}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "out" / "intervals.csv")
    assert list(table.columns) == COLUMNS
    assert len(table) > 0  # an untrained-ish model still scores above its threshold somewhere
    assert table["type"].isin(["mae", "me"]).all()
    assert (table["onset"] >= 0).all() and (table["offset"] < 150).all()
    assert (table["onset"] <= table["offset"]).all()
    assert np.allclose(table["onset_s"], table["onset"] / FPS, atol=1e-3)
    assert np.allclose(table["duration_s"], (table["offset"] - table["onset"] + 1) / FPS, atol=1e-3)
    saved = json.loads((tmp_path / "out" / "intervals.json").read_text())
    assert saved["fps"] == FPS and saved["frames"] == 150
    assert len(saved["intervals"]) == len(table)
    assert (tmp_path / "out" / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{len(table)} expression(s) spotted in 5.0 s" in result.stdout
    # trained with face.detector=none: no face check, said once, every frame spotted on
    assert result.stderr.count("no face check") == 1, result.stderr
    assert saved["face_check_every_frames"] is None and saved["face_missing"] == []
    assert saved["face_missing_frames"] == 0 and saved["dropped_for_face_missing"] == 0


def test_the_checkpoints_preprocessing_is_repeated_and_reused(checkpoint, recording, tmp_path):
    video, _ = recording
    spot(video, checkpoint, tmp_path, progress=False)
    frames = np.load(tmp_path / "cache" / "frames.npy", mmap_mode="r")
    assert frames.shape == (150, 32, 32)  # the checkpoint's 32 px, not the 128 px default
    meta = tmp_path / "cache" / "meta.json"
    written = meta.stat().st_mtime_ns
    spot(video, checkpoint, tmp_path, progress=False)
    assert meta.stat().st_mtime_ns == written, "an unchanged recording is not preprocessed again"


def test_a_folder_of_frames_gives_the_same_result_as_the_video_file(
    checkpoint, recording, tmp_path
):
    video, images = recording
    from_video = spot(video, checkpoint, tmp_path / "a", progress=False)
    from_folder = spot(images, checkpoint, tmp_path / "b", fps=FPS, progress=False)
    pd.testing.assert_frame_equal(from_video.intervals, from_folder.intervals)
    np.testing.assert_array_equal(from_video.frame_scores, from_folder.frame_scores)
    with pytest.raises(UserError, match="fps"):
        spot(images, checkpoint, tmp_path / "c", progress=False)


def test_a_corrupt_or_truncated_checkpoint_is_one_line(checkpoint, recording, tmp_path):
    video, _ = recording
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all" * 100)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    for bad in (garbage, truncated):
        result = spot_cli(f"video={video}", f"ckpt={bad}", f"out={tmp_path}", cwd=tmp_path)
        assert_user_error(result, str(bad), "not a readable checkpoint")


class Payload:
    """Pickling this needs code execution on load: weights_only must refuse it."""


def test_a_checkpoint_with_code_or_of_another_format_is_refused(checkpoint, recording, tmp_path):
    video, _ = recording
    with_code = tmp_path / "code.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, with_code)
    result = spot_cli(f"video={video}", f"ckpt={with_code}", f"out={tmp_path}", cwd=tmp_path)
    assert_user_error(result, str(with_code), "not loaded for safety")

    newer = tmp_path / "newer.ckpt"
    contents = torch.load(checkpoint, weights_only=True)
    contents["mespot"]["format"] = 99
    torch.save(contents, newer)
    result = spot_cli(f"video={video}", f"ckpt={newer}", f"out={tmp_path}", cwd=tmp_path)
    assert_user_error(result, str(newer), "format 99")


def test_an_unreadable_video_is_one_line(checkpoint, tmp_path):
    fake = tmp_path / "holiday.mp4"
    fake.write_text("this is not a video")
    result = spot_cli(f"video={fake}", f"ckpt={checkpoint}", f"out={tmp_path}", cwd=tmp_path)
    assert_user_error(result, str(fake), "video")
    result = spot_cli(f"video={tmp_path / 'missing.mp4'}", f"ckpt={checkpoint}", cwd=tmp_path)
    assert_user_error(result, "missing.mp4", "no such file")


@pytest.mark.parametrize("setting", ["batch_size=0", "fps=-1"])
def test_an_impossible_setting_is_one_line_before_any_work(checkpoint, recording, setting,
                                                            tmp_path):  # fmt: skip
    result = spot_cli(f"video={recording[0]}", f"ckpt={checkpoint}", f"out={tmp_path / 'out'}",
                      setting, cwd=tmp_path)  # fmt: skip
    assert_user_error(result, setting)
    assert not (tmp_path / "out").exists()


def test_a_recording_too_short_to_spot_is_one_line(checkpoint, recording, tmp_path):
    """One frame shows no change: refused before any preprocessing, naming the minimum."""
    frame = cv2.imread(str(next(recording[1].iterdir())))
    video = tmp_path / "still.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), FPS,
                             frame.shape[1::-1])  # fmt: skip
    writer.write(frame)
    writer.release()
    result = spot_cli(f"video={video}", f"ckpt={checkpoint}", f"out={tmp_path / 'out'}",
                      cwd=tmp_path)  # fmt: skip
    assert_user_error(result, str(video), "1 frame(s)", "too short", "at least 2 frames")
    assert not (tmp_path / "out" / "cache").exists()


def test_ctrl_c_is_one_line_exit_130_and_the_same_command_then_finishes(
    checkpoint, recording, tmp_path
):
    """Interrupted while the recording is preprocessed (its flow on threads): one line, status
    130, no array and no intervals left; the same command then spots the whole recording."""
    frames = [cv2.imread(str(p)) for p in sorted(recording[1].iterdir())]
    video = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), FPS,
                             frames[0].shape[1::-1])  # fmt: skip
    for frame in frames * 12:  # 1,800 frames: long enough to be interrupted half-way
        writer.write(frame)
    writer.release()
    command = [str(BIN / "mespot-spot"), "progress=false", f"video={video}",
               f"ckpt={checkpoint}", f"out={tmp_path / 'out'}"]  # fmt: skip
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True, cwd=tmp_path)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("out/cache/*.partial")) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGINT)  # as a terminal's Ctrl-C
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        "interrupted: no intervals written; the recording's preprocessing is kept if it had "
        "finished, and the same command reuses it"
    )
    assert not [p for p in tmp_path.glob("out/**/*") if p.is_file()]
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    table = pd.read_csv(tmp_path / "out" / "intervals.csv")
    assert list(table.columns) == COLUMNS


def test_a_checkpoint_that_reads_frame_differences_gets_them_from_the_recording(
    tiny_mock, recording, tmp_path
):
    """The checkpoint stores data.frame_diffs: mespot-spot feeds the recording the frame, its
    differences and its flow (5 channels), and the motion energy sees the same differences."""
    root, cache_dir = tiny_mock
    command = [str(BIN / "mespot-train"), "debug=default", f"data.root={root}",
               f"paths.cache_dir={cache_dir}", f"paths.log_dir={tmp_path}", "data.test_subject=s16",
               "callbacks.progress=null", "test=false", "data.frame_diffs=[2,4]",
               "model.motion_grid=4", *TINY]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (ckpt,) = tmp_path.glob("train/runs/*/checkpoints/last.ckpt")
    saved = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    assert saved["in_chans"] == 5 and saved["inputs"]["frame_diffs"] == [2, 4]
    assert saved["motion_grid"] == 4
    video, _ = recording
    result = spot(video, ckpt, tmp_path / "out", progress=False)
    assert list(result.intervals.columns) == COLUMNS
    assert result.frame_scores.shape == (150, 2)
