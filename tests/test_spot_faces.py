"""`mespot-spot` reports only where there is a face: a recording whose face is covered by noise
for a while and then leaves the frame, one without a face, and the watch that finds the spans."""

import json

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from console import assert_user_error, run
from test_spot import FPS, tiny_checkpoint

from mespot.data.face import FaceWatch
from mespot.plot import timeline
from mespot.spot import spot

NOISE = (40, 59)  # frames covered by noise
GONE = (100, 124)  # the face slides out of the frame (4 frames), then the frame is empty


@pytest.fixture(scope="module")
def haar_checkpoint(tiny_mock, tmp_path_factory):
    """The session's tiny checkpoint, its preprocessing set to find the face with OpenCV's Haar
    cascade: the recording is then cropped, and watched, as a checkpoint trained on `haar`
    crops would have it (the weights are as untrained either way)."""
    contents = torch.load(tiny_checkpoint(tiny_mock, tmp_path_factory), weights_only=True)
    contents["hyper_parameters"]["preprocessing"]["detector"] = "haar"
    path = tmp_path_factory.mktemp("haar") / "haar.ckpt"
    torch.save(contents, path)
    return path


def write_video(path, frames):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def gaps(tiny_mock, tmp_path_factory):
    """150 frames of a mock face at 30 fps: noise over NOISE, the face out of the frame over
    GONE."""
    paths = sorted((tiny_mock[0] / "rawpic" / "s16").glob("*/img*.jpg"))[:150]
    frames = [cv2.imread(str(p)) for p in paths]
    rng = np.random.default_rng(0)
    width = frames[0].shape[1]
    for t in range(NOISE[0], NOISE[1] + 1):
        frames[t] = rng.integers(0, 256, frames[t].shape, dtype=np.uint8)
    for t in range(GONE[0], GONE[1] + 1):
        shift = min(width, (t - GONE[0] + 1) * width // 4)
        moved = np.zeros_like(frames[t])
        moved[:, shift:] = frames[t][:, : width - shift]
        frames[t] = moved
    return write_video(tmp_path_factory.mktemp("gaps") / "gaps.avi", frames)


def test_spans_without_the_face_are_marked_drawn_and_never_spotted_on(
    haar_checkpoint, gaps, tmp_path
):
    out = tmp_path / "out"
    result = run("mespot-spot", f"video={gaps}", f"ckpt={haar_checkpoint}", f"out={out}",
                 "progress=false", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((out / "intervals.json").read_text())
    (noise, gone) = saved["face_missing"]
    assert noise == list(NOISE)  # noise: no face from its first frame to its last
    assert GONE[0] <= gone[0] <= GONE[0] + 2 and gone[1] == GONE[1]  # out of the crop at once
    assert saved["face_missing_frames"] == sum(b - a + 1 for a, b in saved["face_missing"])
    assert saved["face_check_every_frames"] == 8  # 0.25 s at 30 fps
    table = pd.read_csv(out / "intervals.csv")
    for first, last in saved["face_missing"]:
        assert not ((table["onset"] <= last) & (table["offset"] >= first)).any()
    assert len(table) == len(saved["intervals"])
    warnings = [line for line in result.stderr.splitlines() if "no face in" in line]
    assert len(warnings) == 1 and "2 span(s)" in warnings[0], result.stderr
    assert f"no face in {saved['face_missing_frames']} frame(s)" in warnings[0]
    assert f"{saved['dropped_for_face_missing']} interval(s)" in warnings[0]
    assert (out / "timeline.png").is_file()

    # unchanged recording and settings: the cache and its face spans are reused
    meta = out / "cache" / "meta.json"
    written = meta.stat().st_mtime_ns
    again = spot(gaps, haar_checkpoint, out, progress=False)
    assert meta.stat().st_mtime_ns == written
    assert again.face_missing.tolist() == saved["face_missing"]
    pd.testing.assert_frame_equal(again.intervals, table, check_dtype=False)


def test_a_recording_without_a_face_is_one_line(haar_checkpoint, tmp_path):
    rng = np.random.default_rng(1)
    walls = [rng.integers(0, 256, (72, 96, 3), dtype=np.uint8) for _ in range(20)]
    video = write_video(tmp_path / "wall.avi", walls)
    result = run("mespot-spot", f"video={video}", f"ckpt={haar_checkpoint}",
                 f"out={tmp_path / 'out'}", "progress=false", cwd=tmp_path)  # fmt: skip
    assert_user_error(result, str(video), "no face found in frames 0-19", "face.detector=haar")
    assert not (tmp_path / "out" / "intervals.json").exists()


def watched(present: np.ndarray, every: int) -> tuple[list[tuple[int, int]], list[int]]:
    """FaceWatch over a stream whose frame t shows the face when present[t]: (the spans it
    reports, the frames it checked)."""
    checked = []

    def check(frame):
        checked.append(int(frame))
        return bool(present[int(frame)])

    watch = FaceWatch(check, every)
    for t in range(len(present)):
        watch.see(t, np.array(t))
        watch.see(0, np.array(0))  # a re-read of an earlier frame: ignored
    return watch.missing(), checked


def test_the_watch_finds_each_span_to_the_frame_at_one_check_every_few_frames():
    assert watched(np.ones(800, bool), every=8) == ([], [*range(0, 800, 8), 799])
    present = np.ones(64, bool)
    present[[*range(10, 26), 40, 41, 50, 51, *range(60, 64)]] = False
    spans, checked = watched(present, every=8)
    # 50-51 falls between two checks that see the face (48, 56): shorter than `every`, unseen
    assert spans == [(10, 25), (40, 41), (60, 63)]
    assert len(set(checked)) == len(checked) == 9 + 7 * 4 + 6  # every 8th, the last, around
    # each of the 5 changes the frames since the previous check


def test_the_timeline_draws_the_spans_without_a_face(tmp_path):
    predictions = pd.DataFrame({"onset": [5], "offset": [9], "type": ["mae"], "score": [0.7]})
    plain = timeline(tmp_path / "plain.png", predictions=predictions, fps=FPS)
    banded = timeline(tmp_path / "banded.png", predictions=predictions, fps=FPS,
                      face_missing=np.array([[20, 40]]))  # fmt: skip
    assert plain.read_bytes() != banded.read_bytes()
