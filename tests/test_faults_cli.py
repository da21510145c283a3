"""Damaged input and a user's mistakes, met as a user meets them (issue 23): the console script
stops with one line naming the file or setting (or fails the one video, by name), and nothing
wrong is written."""

import os
import resource
import shutil
import signal
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from console import BIN, assert_user_error, run

import mespot
from mespot.checkpoint import CHECKPOINT_FORMAT
from mespot.data import cache
from mespot.data import preprocess as preprocessing
from mespot.data.adapters import load_annotations
from mespot.data.preprocess import Job, Settings, process_video
from mespot.data.synth import MockSpec, write_mock
from mespot.models.fpn import SMALL
from mespot.module import SpotterModule

SETTINGS = [arg.removeprefix("preprocessing.") for arg in TINY]  # mespot-preprocess's names
VIDEO_DIRS = {"15_0101": "15_0101disgustingteeth", "15_0102": "15_0102eatingworms"}


@pytest.fixture(scope="module")
def mock(tmp_path_factory):
    """A one-subject, two-video mock CAS(ME)², 100 frames each (64×48)."""
    spec = MockSpec("casme2", subjects=1, videos_per_subject=2, frames=100, size=(64, 48),
                    seed=4, mae_per_video=1, me_per_video=1)  # fmt: skip
    return write_mock(spec, tmp_path_factory.mktemp("mock"))


def copy_of(mock, tmp_path) -> Path:
    return Path(shutil.copytree(mock, tmp_path / "data"))


def frame(root: Path, video: str, number: int) -> Path:
    return root / "rawpic" / "s15" / VIDEO_DIRS[video] / f"img{number:03d}.jpg"


def preprocess_args(root, cache_dir, *extra) -> list[str]:
    return ["data=casme2", f"data.root={root}", f"paths.cache_dir={cache_dir}", "progress=false",
            "workers=2", *SETTINGS, *extra]  # fmt: skip


def arrays_in(cache_dir: Path) -> list[Path]:
    """Every array file in a cache, finished or not."""
    return sorted(p for p in cache_dir.rglob("*") if ".npy" in p.name)


def as_a_user(command: list[str], **kwargs):
    """Run as an ordinary user would, for whom file permissions hold: root runs the command
    without the capabilities that override them (setpriv); skipped where neither is possible."""
    if os.getuid() != 0:
        return subprocess.run(command, **kwargs)
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be made to hold")
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    return subprocess.run(drop + command, **kwargs)


# --- damaged frames and flow ---------------------------------------------------------------------


def test_a_truncated_jpeg_fails_its_video_by_name_and_caches_nothing_of_it(mock, tmp_path):
    root = copy_of(mock, tmp_path)
    cut = frame(root, "15_0102", 50)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # "Premature end of JPEG file"
    unwritten = frame(root, "15_0101", 20)  # its end allocated but never written: zeros
    unwritten.write_bytes(unwritten.read_bytes()[:300].ljust(unwritten.stat().st_size, b"\0"))
    result = run("mespot-preprocess", *preprocess_args(root, tmp_path / "cache"), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert f"failed s15/15_0102: frame {cut} is truncated" in result.stdout
    assert f"failed s15/15_0101: frame {unwritten} is truncated" in result.stdout
    assert "Traceback" not in result.stderr and "Premature end" not in result.stderr
    assert arrays_in(tmp_path / "cache") == []  # no video committed, no half video left


def test_flow_with_nan_fails_the_video_naming_the_frame(mock, tmp_path, monkeypatch):
    """(In-process: no real flow method gives NaN on a mock face, so the flow is made to.)"""
    real, calls = preprocessing.make_flow, []

    def nan_from_the_30th_batch(*args):
        flow = real(*args)
        submit = flow.submit

        def broken(references, frames):
            calls.append(len(frames))
            factor, result = np.nan if len(calls) >= 30 else 1, submit(references, frames)
            return lambda: result() * factor

        flow.submit = broken
        return flow

    monkeypatch.setattr(preprocessing, "make_flow", nan_from_the_30th_batch)
    frames = load_annotations("casme2", mock).frames[("s15", "15_0101")]
    job = Job("s15", "15_0101", frames, 30.0, tmp_path / "s15" / "15_0101")
    settings = Settings(size=32, flow_method="dis", detector="none")
    result = process_video(job, settings)
    assert result.status == "failed" and "holds NaN or inf" in result.error
    assert f"15_0101disgustingteeth/img{sum(calls[:29]) + 1:03d}.jpg" in result.error
    assert not job.out.exists()


# --- stopping: Ctrl-C, a full disk ---------------------------------------------------------------


def test_ctrl_c_is_one_line_exit_130_and_the_next_run_resumes(mock, tmp_path):
    command = [str(BIN / "mespot-preprocess"),
               *preprocess_args(mock, tmp_path / "cache", "flow.method=tvl1")]  # fmt: skip
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True, cwd=tmp_path)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("cache/*/s15/*/*.partial")) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGINT)  # as a terminal's Ctrl-C: every process of the group
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.strip()] == [
        "interrupted: preprocessing stopped (finished videos are kept; run the same command "
        "to resume)"
    ]
    assert not list(tmp_path.glob("cache/**/*.partial"))
    finished = [v for v in tmp_path.glob("cache/*/s15/*") if cache.is_done(v)]
    for video in finished:
        assert cache.load_video(video).flow.shape[0] == 100
    rerun = run("mespot-preprocess", *preprocess_args(mock, tmp_path / "cache"), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{2 - len(finished)} done, {len(finished)} skipped" in rerun.stdout


@pytest.mark.parametrize("command", ["mespot-train", "mespot-spot"])
def test_ctrl_c_while_a_command_starts_is_one_line_exit_130(command, tmp_path):
    """Half a second into start-up the command is still importing torch and Lightning: Ctrl-C
    there stops it once they have loaded, with one line and status 130, not a traceback
    through the imports."""
    job = subprocess.Popen([str(BIN / command), "--help"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True,
                           cwd=tmp_path)  # fmt: skip
    time.sleep(0.5)
    os.killpg(job.pid, signal.SIGINT)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 130, stderr[-3000:]
    assert [line for line in stderr.splitlines() if line.strip()] == [
        "interrupted: stopped before it finished"
    ]


def _small_files_only():
    """A 50 kB file-size limit: the arrays' writes fail as on a full disk (EFBIG, SIGXFSZ
    ignored so that the write raises rather than the process dying)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))


def test_a_full_disk_is_one_line_naming_the_folder(mock, tmp_path):
    result = subprocess.run([str(BIN / "mespot-preprocess"),
                             *preprocess_args(mock, tmp_path / "cache")],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            preexec_fn=_small_files_only)  # fmt: skip
    line = assert_user_error(result, "disk full writing", str(tmp_path / "cache"))
    assert "run the same command to resume" in line
    assert arrays_in(tmp_path / "cache") == []


# --- folders that cannot be read or written ------------------------------------------------------


def test_a_cache_dir_that_is_a_file_or_read_only_is_one_line(mock, tmp_path):
    a_file = tmp_path / "cache.txt"
    a_file.write_text("not a folder")
    result = run("mespot-preprocess", *preprocess_args(mock, a_file), cwd=tmp_path)
    assert_user_error(result, f"paths.cache_dir={a_file}", "Not a directory")
    assert a_file.read_text() == "not a folder"

    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    result = as_a_user([str(BIN / "mespot-preprocess"), *preprocess_args(mock, read_only)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert_user_error(result, f"paths.cache_dir={read_only}", "Permission denied")
    assert list(read_only.iterdir()) == []


def test_an_unreadable_video_folder_is_one_line_for_annotations_and_preprocess(mock, tmp_path):
    root = copy_of(mock, tmp_path)
    locked = root / "rawpic" / "s15" / VIDEO_DIRS["15_0102"]
    locked.chmod(0)
    try:
        for command, out in (
            ("mespot-annotations", f"out={tmp_path / 'annotations'}"),
            ("mespot-preprocess", f"paths.cache_dir={tmp_path / 'cache'}"),
        ):
            result = as_a_user(
                [str(BIN / command), "data=casme2", f"data.root={root}", out],
                capture_output=True,
                text=True,
                timeout=300,
                cwd=tmp_path,
            )
            assert_user_error(result, f"cannot read the folder {locked}", "Permission denied")
    finally:
        locked.chmod(0o755)
    assert not (tmp_path / "annotations").exists() and not (tmp_path / "cache").exists()


# --- mespot-evaluate's inputs and output ---------------------------------------------------------

TRUTH = "subject,video,onset,offset,type\ns1,v1,1,10,me\n"


@pytest.mark.parametrize(
    ("predictions", "fragments"),
    [
        ("subject,video,onset,Offset,offset,type\ns1,v1,1,10,12,me\n",
         ["line 1: column 'offset' appears more than once (Offset, offset)"]),
        ("subject,video,onset,offset,type,score\ns1,v1,1,10,me,inf\n",
         ["line 2: score 'inf' is not a number"]),
        ("subject,video,onset,offset,type,score\ns1,v1,1,10,me,0.5,0.7\n",
         ["line 2: 7 fields where the header names 6"]),
    ],
)  # fmt: skip
def test_a_bad_predictions_csv_is_one_line_and_writes_nothing(tmp_path, predictions, fragments):
    (tmp_path / "pred.csv").write_text(predictions)
    (tmp_path / "gt.csv").write_text(TRUTH)
    result = run("mespot-evaluate", "predictions=pred.csv", "ground_truth=gt.csv", cwd=tmp_path)
    assert_user_error(result, "pred.csv", *fragments)
    assert not (tmp_path / "metrics.json").exists()


def test_evaluate_out_that_is_a_folder_is_refused_before_any_work(tmp_path):
    (tmp_path / "gt.csv").write_text(TRUTH)
    (tmp_path / "results").mkdir()
    result = run("mespot-evaluate", "predictions=gt.csv", "ground_truth=gt.csv", "out=results",
                 cwd=tmp_path)  # fmt: skip
    assert_user_error(result, "out=results is a folder", "out=results/metrics.json")
    assert list((tmp_path / "results").iterdir()) == []
    assert not list(tmp_path.glob(".*.tmp"))


def test_hydra_full_error_keeps_the_traceback_of_a_user_error(tmp_path):
    result = run("mespot-annotations", "data=casme2", f"data.root={tmp_path / 'nowhere'}",
                 cwd=tmp_path, env={**os.environ, "HYDRA_FULL_ERROR": "1"})  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "UserError: data.root=" in result.stderr


# --- checkpoints, as mespot-spot loads them ------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint as mespot-train writes one (the keys Lightning and SpotterModule save) of a
    small real model; saving it directly spares a training run."""
    inputs = {"window": 16, "stride": 8, "use_flow": True, "frame_diffs": [], "rest_span": 0}
    options = dict(in_chans=3, backbone={"name": "vovnet", "width": 0.25}, neck=SMALL,
                   preprocessing=asdict(Settings(size=32, flow_method="dis", detector="none")),
                   inputs=inputs)  # fmt: skip
    model = SpotterModule(**options)
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "mespot": {"format": CHECKPOINT_FORMAT, "version": mespot.__version__}},
               path)  # fmt: skip
    return path


def changed(checkpoint: Path, path: Path, change) -> Path:
    """A copy of the checkpoint at `path` with `change(contents)` made."""
    contents = torch.load(checkpoint, weights_only=True)
    change(contents)
    torch.save(contents, path)
    return path


def test_missing_truncated_and_mismatched_checkpoints_are_one_line(checkpoint, tmp_path):
    def channels(c):
        c["hyper_parameters"]["in_chans"] = 2

    def backbone(c):
        c["hyper_parameters"]["backbone"] = {"name": "densenet"}

    def format_(c):
        c["mespot"]["format"] = CHECKPOINT_FORMAT + 1

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    cases = [
        (tmp_path / "missing.ckpt", ["missing.ckpt: no such file"]),
        (tmp_path, [f"ckpt={tmp_path} is a folder"]),
        (truncated, [str(truncated), "not a readable checkpoint"]),
        (changed(checkpoint, tmp_path / "channels.ckpt", channels),
         ["channels.ckpt: its weights do not fit", "2 input channels", "in the checkpoint"]),
        (changed(checkpoint, tmp_path / "backbone.ckpt", backbone),
         ["backbone.ckpt: its weights do not fit", "backbone densenet", "in the model"]),
        (changed(checkpoint, tmp_path / "format.ckpt", format_),
         ["format.ckpt", f"format {CHECKPOINT_FORMAT + 1}"]),
    ]  # fmt: skip
    for ckpt, fragments in cases:
        result = run("mespot-spot", "video=face.mp4", f"ckpt={ckpt}", "out=spots",
                     "progress=false", cwd=tmp_path)  # fmt: skip
        assert_user_error(result, *fragments)
        assert not (tmp_path / "spots").exists()
