"""Preprocessing into the cache: arrays, frame mapping, flow, hashing, resuming, bad frames."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from mespot.data import cache
from mespot.data.adapters import load_annotations
from mespot.data.flow import METHODS, make_flow
from mespot.data.frames import FrameList
from mespot.data.preprocess import (
    Job,
    Settings,
    _truncated_jpeg,
    kept_frames,
    preprocess,
    process_video,
)
from mespot.data.synth import MockSpec, write_mock
from mespot.data.synth.render import Nuisance, render_video, sample_appearance
from mespot.errors import UserError
from mespot.parallel import available_cores

FAST = Settings(size=64, flow_method="dis", flow_params={"preset": "fast"})


def mock(tmp_path_factory, dataset, **changes):
    settings = dict(subjects=1, videos_per_subject=2, frames=150, size=(160, 120), seed=3)
    settings |= dict(mae_per_video=1, me_per_video=1)
    return write_mock(MockSpec(dataset, **(settings | changes)), tmp_path_factory.mktemp(dataset))


@pytest.fixture(scope="module")
def casme2(tmp_path_factory):
    return mock(tmp_path_factory, "casme2")


@pytest.fixture(scope="module")
def samm(tmp_path_factory):
    return mock(tmp_path_factory, "sammlv", frames=700, grey=True, size=(192, 102))


def run(root, dataset, cache_dir, settings=FAST, **kwargs):
    annotations = load_annotations(dataset, root)
    return preprocess(annotations, root, cache_dir, settings, workers=1, progress=False, **kwargs)


def test_cache_holds_crops_flow_and_the_source_frame_of_each(casme2, tmp_path):
    report = run(casme2, "casme2", tmp_path)
    assert (report.count("done"), report.count("failed")) == (2, 0)
    video = cache.load_video(report.folder / "s15" / "15_0101")
    assert video.frames.shape == (150, 64, 64) and video.frames.dtype == np.uint8
    assert video.flow.shape == (150, 64, 64, 2) and video.flow.dtype == np.float16
    assert isinstance(video.frames, np.memmap)
    assert video.meta["source_frames"] == list(range(1, 151))  # CAS(ME)² numbers from 1
    assert video.meta["face"]["found"] and video.meta["fps"] == 30
    assert not np.any(video.flow[0])  # frame 0 has no earlier frame: zero flow
    assert np.abs(video.flow[1:].astype(np.float32)).max() > 0
    assert (report.folder / "intervals.csv").is_file() and (report.folder / "videos.csv").is_file()


def test_rgb_crops(casme2, tmp_path):
    report = run(casme2, "casme2", tmp_path, Settings(size=48, colour="rgb", flow_method="dis"))
    assert cache.load_video(report.folder / "s15" / "15_0102").frames.shape == (150, 48, 48, 3)


def test_resampling_keeps_the_source_frame_numbers(samm, tmp_path):
    settings = Settings(size=64, fps=30, flow_method="dis", detector="none")
    report = run(samm, "sammlv", tmp_path, settings)
    meta = cache.load_video(report.folder / "006" / "006_1").meta
    kept = meta["source_frames"]
    assert len(kept) == int(699 * 30 / 200) + 1 == 105
    assert kept[0] == 1 and kept[:4] == [1, 8, 14, 21]  # 200/30 = 6.67 frames apart
    assert meta["fps"] == 30 and meta["source_fps"] == 200
    assert cache.load_video(report.folder / "006" / "006_1").frames.shape[0] == 105


def test_kept_frames_fill_gaps_and_never_upsample():
    frames = FrameList((0, 1, 3, 4), tuple(Path(f"{n}.jpg") for n in (0, 1, 3, 4)))
    assert kept_frames(frames, 30, None) == [0, 1, 2, 3, 4]
    assert kept_frames(frames, 30, 60) == [0, 1, 2, 3, 4]
    assert kept_frames(frames, 30, 15) == [0, 2, 4]


def test_gaps_are_filled_with_the_previous_frame(tmp_path_factory, tmp_path):
    root = mock(tmp_path_factory, "casme3", videos_per_subject=1, frames=200)
    report = run(root, "casme3", tmp_path)
    meta = cache.load_video(report.folder / "spNO.1" / "spNO.1_a").meta
    assert meta["source_frames"] == list(range(200)) and meta["filled_frames"] == 2


@pytest.mark.parametrize("method", METHODS)
def test_flow_sign_and_scale_on_a_known_shift(method):
    app = sample_appearance(np.random.default_rng(5))
    still = Nuisance(head_drift=0, head_rotation=0, illumination=0, noise=0)
    frame = next(render_video(app, [], 1, size=(128, 128), grey=True, nuisance=still))
    moved = cv2.warpAffine(frame, np.float32([[1, 0, 2], [0, 1, -1]]), (128, 128),
                           borderMode=cv2.BORDER_REFLECT)  # fmt: skip
    flow = make_flow(method)(frame, moved)
    dx, dy = np.median(flow[24:-24, 24:-24].reshape(-1, 2), axis=0)
    assert dx == pytest.approx(2, abs=0.2) and dy == pytest.approx(-1, abs=0.2)


@pytest.mark.parametrize("method", ["tvl1", "dis", "farneback"])
def test_flow_on_several_threads_is_the_flow_on_one(casme2, tmp_path, method):
    """150 frames in batches of 3 × 8 pairs (the last one short), each started while the next
    frames are read: the cache is the one-thread cache to the bit."""
    frames = load_annotations("casme2", casme2).frames[("s15", "15_0101")]
    settings = Settings(size=48, detector="none", flow_method=method)

    def cached(threads):
        out = tmp_path / f"threads{threads}"
        job = Job("s15", "15_0101", frames, 30.0, out)
        assert process_video(job, replace(settings, flow_threads=threads)).status == "done"
        return cache.load_video(out)

    one, three = cached(1), cached(3)
    assert make_flow(method, threads=3).batch == 24 and len(frames.numbers) == 150
    np.testing.assert_array_equal(three.frames, one.frames)
    np.testing.assert_array_equal(three.flow, one.flow)
    assert np.abs(one.flow.astype(np.float32)).max() > 0.1  # the face moves: the flow is not 0
    key = settings.key("casme2", casme2)
    assert replace(settings, flow_threads=3).key("casme2", casme2) == key


def test_the_spare_cores_compute_the_flow_of_fewer_videos_than_workers(tmp_path_factory):
    """One video, four workers asked: its flow runs on min(4, cores) threads, and the arrays
    are those of one thread."""
    root = mock(tmp_path_factory, "casme2", videos_per_subject=1)
    settings = replace(FAST, flow_method="tvl1", flow_params={"nscales": 2})
    annotations = load_annotations("casme2", root)
    videos = {}
    for workers in (1, 4):
        report = preprocess(annotations, root, tmp_path_factory.mktemp("cache"), settings,
                            workers=workers, progress=False)  # fmt: skip
        assert report.count("done") == 1
        videos[workers] = report.folder / "s15" / "15_0101"
    threads = [json.loads((videos[w] / "meta.json").read_text())["flow_threads"] for w in (1, 4)]
    assert threads == [1, min(4, available_cores())]
    one, spread = (cache.load_video(folder) for folder in videos.values())
    np.testing.assert_array_equal(spread.flow, one.flow)


def test_aligned_faces_keep_the_head_s_motion_out_of_the_flow(casme2, tmp_path):
    """The mock's head drifts and turns; with face.align=stabilise the face barely moves in the
    crop."""

    def face_flow(settings):
        report = run(casme2, "casme2", tmp_path / settings.align, settings)
        flow = cache.load_video(report.folder / "s15" / "15_0101").flow.astype(np.float32)
        # the head's motion: each frame's median flow over the middle of the face
        return np.abs(np.median(flow[:, 20:44, 20:44], axis=(1, 2))).mean()

    fixed = face_flow(FAST)
    aligned = face_flow(replace(FAST, align="stabilise"))
    assert aligned < fixed / 2, (aligned, fixed)


def test_cache_folder_changes_with_every_array_setting(tmp_path):
    root = tmp_path / "data"

    def folder(settings, dataset="casme2", where=root):
        return cache.cache_folder(tmp_path, dataset, settings.key(dataset, where))

    base = folder(Settings())
    changed = [
        Settings(size=112),
        Settings(colour="rgb"),
        Settings(detector="none"),
        Settings(margin=0.3),
        Settings(face_frames=5),
        Settings(fps=25),
        Settings(flow_method="dis"),
        Settings(flow_params={"nscales": 4}),
        Settings(flow_step=2),
        Settings(align="stabilise"),
    ]
    names = {folder(s) for s in changed}
    assert base not in names and len(names) == len(changed)
    assert folder(Settings(), "sammlv") != base and folder(Settings(), where=tmp_path / "b") != base
    assert folder(Settings()) == base
    assert Settings().key("casme2", root)["opencv"] == cv2.__version__


def test_rerun_skips_finished_videos_and_redoes_an_interrupted_one(casme2, tmp_path):
    first = run(casme2, "casme2", tmp_path)
    done = first.folder / "s15" / "15_0101"
    interrupted = first.folder / "s15" / "15_0102"
    (interrupted / "meta.json").unlink()  # killed before the video was committed…
    (interrupted / "flow.npy").rename(interrupted / "flow.npy.partial")  # …with a half-written file
    stamp = (done / "frames.npy").stat().st_mtime_ns

    second = run(casme2, "casme2", tmp_path)
    status = {r.video: r.status for r in second.results}
    assert status == {"15_0101": "skipped", "15_0102": "done"}
    assert (done / "frames.npy").stat().st_mtime_ns == stamp
    assert cache.is_done(interrupted) and not list(interrupted.glob("*.partial"))
    assert {r.video: r.status for r in run(casme2, "casme2", tmp_path, force=True).results} == {
        "15_0101": "done",
        "15_0102": "done",
    }


def test_kill_9_leaves_nothing_half_done_and_the_next_run_finishes(casme2, tmp_path):
    command = [
        str(Path(sys.executable).parent / "mespot-preprocess"),
        "data=casme2",
        f"data.root={casme2}",
        f"paths.cache_dir={tmp_path}",
        "workers=1",
        "progress=false",
        "flow.method=tvl1",
    ]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("*/s15/*/meta.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)  # the main process and its worker, mid-run
    job.wait()
    for video in tmp_path.glob("*/s15/*"):
        if cache.is_done(video):  # whatever counts as done is complete and readable
            loaded = cache.load_video(video)
            assert loaded.frames.shape[0] == loaded.flow.shape[0] == 150
    finished = sum(cache.is_done(v) for v in tmp_path.glob("*/s15/*"))
    assert finished >= 1

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{2 - finished} done, {finished} skipped" in rerun.stdout


def test_a_corrupt_frame_fails_its_video_by_name_while_the_other_finishes(casme2, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(casme2, root)
    bad = root / "rawpic/s15/15_0102eatingworms/img042.jpg"
    bad.write_bytes(b"not an image at all")
    report = run(root, "casme2", tmp_path / "cache")
    status = {r.video: r for r in report.results}
    assert status["15_0101"].status == "done"
    assert status["15_0102"].status == "failed" and "img042.jpg" in status["15_0102"].error
    assert not cache.is_done(report.folder / "s15" / "15_0102")
    assert "failed s15/15_0102: cannot read frame" in report.summary()


def test_no_face_falls_back_to_the_centre_and_says_so(casme2, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(casme2, root)
    for frame in (root / "rawpic/s15/15_0101disgustingteeth").glob("*.jpg"):
        cv2.imwrite(str(frame), np.full((120, 160, 3), 90, np.uint8))
    report = run(root, "casme2", tmp_path / "cache")
    meta = cache.load_video(report.folder / "s15" / "15_0101").meta
    assert meta["face"]["found"] is False and meta["face"]["crop"] == [20, 0, 120, 120]
    assert "no face found (centre crop used) in 1: s15/15_0101" in report.summary()


def test_empty_video_folder_fails_and_frames_absent_is_an_error(casme2, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(casme2, root)
    for frame in (root / "rawpic/s15/15_0101disgustingteeth").glob("*.jpg"):
        frame.unlink()
    report = run(root, "casme2", tmp_path / "cache")
    failed = {r.video: r.error for r in report.failed}
    assert "no frames" in failed["15_0101"]

    shutil.rmtree(root / "rawpic")
    with pytest.raises(UserError, match="no frames under"):
        run(root, "casme2", tmp_path / "cache")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(colour="blue"), "colour='blue'"),
        (dict(flow_method="lk"), "flow.method='lk'"),
        (dict(flow_params={"iterations": 3}), "flow.tvl1: unknown setting"),
        (dict(flow_step=0), "flow.step=0"),
        (dict(detector="dlib"), "face.detector='dlib'"),
        (dict(align="sift"), "face.align='sift'"),
    ],
)
def test_bad_settings_name_themselves(settings, message):
    with pytest.raises(UserError, match=message):
        Settings(**settings)


def test_cli_preprocesses_a_mock_and_reports(casme2, tmp_path):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mespot-preprocess"), "data=casme2",
         f"data.root={casme2}", f"paths.cache_dir={tmp_path}", "size=64", "flow.method=dis",
         "progress=false"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "videos: 2 done, 0 skipped (already cached), 0 failed; 300 frames" in result.stdout
    (folder,) = tmp_path.iterdir()
    assert json.loads((folder / "settings.json").read_text())["flow_params"] == {"preset": "medium"}


def test_a_full_disk_is_reported_as_such(casme2, tmp_path, monkeypatch):
    def no_space(self, meta):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.dir / "flow.npy"))

    monkeypatch.setattr(cache.VideoWriter, "commit", no_space)
    annotations = load_annotations("casme2", casme2)
    frames = annotations.frames[("s15", "15_0101")]
    job = Job("s15", "15_0101", frames, 30.0, tmp_path / "s15" / "15_0101")
    result = process_video(job, FAST)
    assert result.status == "failed" and result.disk_full
    assert "No space left on device" in result.error and "flow.npy" in result.error
    assert not cache.is_done(job.out)


def test_a_jpeg_is_whole_when_its_end_marker_is_in_its_last_kib(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    ok, image = cv2.imencode(".jpg", pixels)
    data = image.tobytes()
    cases = {"whole": data, "appended": data + b"trailer\0\0", "cut": data[: len(data) // 2],
             "zeroed": data[: len(data) // 2] + b"\0" * (len(data) // 2)}  # fmt: skip
    for name, content in cases.items():
        (tmp_path / f"{name}.jpg").write_bytes(content)
    assert ok and {n: _truncated_jpeg(tmp_path / f"{n}.jpg") for n in cases} == {
        "whole": False, "appended": False, "cut": True, "zeroed": True,
    }  # fmt: skip


def test_a_commit_stopped_between_its_two_arrays_leaves_neither(tmp_path, monkeypatch):
    """Ctrl-C (or a full disk) after frames.npy is in place but before flow.npy and meta.json:
    nothing of the video stays, not even the renamed frames."""
    real, calls = os.replace, []

    def stopped_on_the_second(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(source, target)

    monkeypatch.setattr(cache.os, "replace", stopped_on_the_second)
    out = tmp_path / "video"
    with pytest.raises(KeyboardInterrupt), cache.VideoWriter(out, 4, (8, 8)) as writer:
        writer.commit({"subject": "s", "video": "v"})
    assert [Path(c).name for c in calls] == ["frames.npy", "flow.npy"]
    assert not out.exists()  # its folder too, empty
