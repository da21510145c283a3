"""`mespot-synth` and `mespot-annotations` as a user runs them: installed console scripts."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mespot.data.synth import MockSpec
from mespot.errors import UserError

BIN = Path(sys.executable).parent


def run(command, *args, cwd):
    return subprocess.run(
        [str(BIN / command), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_synth_then_annotations_reproduces_the_ground_truth(tmp_path):
    made = run(
        "mespot-synth",
        "data=casme3",
        "out=mock",
        "subjects=2",
        "videos_per_subject=1",
        "frames=240",
        "size=[96,72]",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    assert "mespot-annotations data=casme3 data.root=mock" in made.stdout
    assert (tmp_path / "mock/CAS(ME)3_part_A_v2.xls").is_file()
    assert not list(tmp_path.glob(".mock.partial*")), "the build folder must be moved into place"

    read = run("mespot-annotations", "data=casme3", "data.root=mock", "out=ann", cwd=tmp_path)
    assert read.returncode == 0, read.stderr
    assert "subjects 2, videos 2, intervals 8: MaE 4, ME 4" in read.stdout
    assert "frame number(s) missing inside 2 video(s)" in read.stdout
    got = pd.read_csv(tmp_path / "ann/intervals.csv")
    expected = pd.read_csv(tmp_path / "mock/ground_truth.csv")
    pd.testing.assert_frame_equal(
        got, expected.sort_values(["subject", "video", "onset"]).reset_index(drop=True)
    )
    videos = pd.read_csv(tmp_path / "ann/videos.csv")
    assert videos["n_frames"].tolist() == [240, 240]


def test_annotations_without_a_workbook_is_one_line(tmp_path):
    result = run("mespot-annotations", "data=sammlv", f"data.root={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "no SAMM-LV annotation file in" in result.stderr
    assert "data.annotations=PATH" in result.stderr


def test_annotations_needs_the_root(tmp_path):
    result = run("mespot-annotations", "data=casme2", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: data.root is required: add data.root=… to the command"


def test_synth_refuses_impossible_settings_and_existing_folders(tmp_path):
    short = run("mespot-synth", "data=sammlv", "out=m", "frames=100", cwd=tmp_path)
    assert short.returncode == 2
    assert "frames=100 at 200 fps is too short" in short.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full/keep.txt").write_text("mine")
    taken = run("mespot-synth", "data=casme2", "out=full", "write_frames=false", cwd=tmp_path)
    assert taken.returncode == 2 and "out=full exists and is not empty" in taken.stderr
    assert (tmp_path / "full/keep.txt").read_text() == "mine"
    negative = run("mespot-synth", "data=casme2", "out=n", "distractors=-1", cwd=tmp_path)
    assert negative.returncode == 2 and "distractors=-1 must not be negative" in negative.stderr


def test_synth_without_distractors_holds_a_face_still(tmp_path):
    # a demo's mock may leave out head motion, lighting changes and noise (distractors=0)
    settings = ["data=casme2", "subjects=1", "videos_per_subject=1", "frames=30", "size=[64,48]",
                "mae_per_video=0", "me_per_video=0", "blinks_per_minute=0"]  # fmt: skip
    for scale in (0, 1):
        made = run("mespot-synth", f"out=m{scale}", f"distractors={scale}", *settings, cwd=tmp_path)
        assert made.returncode == 0, made.stderr
    for scale, still in ((0, True), (1, False)):
        frames = sorted((tmp_path / f"m{scale}").rglob("*.jpg"))
        assert len(frames) == 30
        assert (frames[0].read_bytes() == frames[-1].read_bytes()) is still


@pytest.mark.parametrize(
    ("setting", "value"), [("distractors", "abc"), ("jpeg_quality", None), ("frames", True)]
)
def test_a_mock_setting_that_is_no_number_is_named(setting, value):
    with pytest.raises(UserError, match=f"^{setting}={value}: give a number$"):
        MockSpec("casme2", **{setting: value})
