"""Timeline figures: `mespot.plot` (TP/FP marking, files written) and the `mespot-plot` CLI."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mespot.errors import UserError
from mespot.plot import mark_hits, timeline

SCRIPT = Path(sys.executable).parent / "mespot-plot"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLUMNS = ["onset", "offset", "type"]


def intervals(rows, score=False):
    return pd.DataFrame(rows, columns=COLUMNS + (["score"] if score else []))


def png_size(path):
    """(width, height) in pixels from the PNG header, after checking the signature."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def recording():
    """A 10-minute 30 fps video: scores for 18,000 frames, 30 MaE and 20 ME, a third missed."""
    rng = np.random.default_rng(0)
    frames = np.arange(1, 18_001)
    scores = rng.random((len(frames), 2)) * 0.2
    gt, pred = [], []
    for k in range(30):
        onset = 200 + 580 * k
        gt.append((onset, onset + 60, "mae"))
        shift = 40 if k % 3 == 0 else 0  # IoU 21/61 < 0.5: a FP, and the interval is missed
        pred.append((onset + shift, onset + 60, "mae", 0.3 + 0.02 * k))
        scores[onset - 1 : onset + 60, 0] = 0.8
    for k in range(20):
        onset = 500 + 870 * k
        gt.append((onset, onset + 9, "me"))
        pred.append((onset + 8 * (k % 2), onset + 9, "me", 0.5))
    return intervals(pred, score=True), intervals(gt), scores, frames


# --- which predictions are TP: what the colours show -------------------------------------------


def test_hits_need_the_same_type_and_iou_of_a_half():
    gt = intervals([(1, 10, "mae"), (100, 109, "me"), (300, 340, "mae")])
    pred = intervals(
        [
            (1, 5, "mae", 0.9),  # inclusive IoU 5/10 = 0.5: a hit
            (100, 109, "mae", 0.8),  # exact frames, wrong type
            (101, 104, "me", 0.7),  # IoU 4/10 < 0.5
            (500, 520, "mae", 0.6),  # nothing there
        ],
        score=True,
    )
    hit, found = mark_hits(pred, gt)
    assert hit.tolist() == [True, False, False, False]
    assert found.tolist() == [True, False, False]
    hit, found = mark_hits(pred, gt, iou=0.3)
    assert hit.tolist() == [True, False, True, False]
    assert found.tolist() == [True, True, False]


def test_a_second_prediction_on_a_found_interval_is_a_false_positive():
    """One-to-one as mespot-evaluate counts (strict): the better IoU wins, then the score."""
    gt = intervals([(10, 29, "mae")])
    pred = intervals([(12, 29, "mae", 0.4), (10, 29, "mae", 0.3), (10, 27, "mae", 0.9)], True)
    hit, found = mark_hits(pred, gt)
    assert hit.tolist() == [False, True, False]
    assert found.tolist() == [True]
    # megc2020 marks only each ground truth's best prediction as well
    assert mark_hits(pred, gt, matching="megc2020")[0].tolist() == [False, True, False]


def test_without_ground_truth_nothing_is_a_hit():
    pred = intervals([(1, 5, "mae"), (7, 9, "me")])
    hit, found = mark_hits(pred, None)
    assert hit.tolist() == [False, False] and found.size == 0
    hit, found = mark_hits(intervals([]), intervals([(1, 5, "me")]))
    assert hit.size == 0 and found.tolist() == [False]


# --- the figure ---------------------------------------------------------------------------------


def test_ten_minute_recording_with_scores_and_ground_truth(recording, tmp_path):
    pred, gt, scores, frames = recording
    out = timeline(
        tmp_path / "figs" / "timeline.png",
        predictions=pred,
        fps=30,
        scores=scores,
        frames=frames,
        ground_truth=gt,
        thresholds={"mae": 0.5, "me": 0.2},
        title="s15 15_0101",
    )
    assert out == tmp_path / "figs" / "timeline.png"
    width, height = png_size(out)
    assert 2000 <= width <= 3600 and height < width / 3  # wide enough for 10 minutes
    assert out.stat().st_size > 50_000
    assert [p.name for p in out.parent.iterdir()] == ["timeline.png"]  # no temporary file left


def test_width_grows_with_the_duration_up_to_a_cap(tmp_path):
    def width(minutes):
        pred = intervals([(1, 30, "mae"), (minutes * 60 * 30 - 10, minutes * 60 * 30, "me")])
        return png_size(timeline(tmp_path / f"{minutes}.png", predictions=pred, fps=30))[0]

    assert width(1) < width(10) < width(60) == width(180) == 3600


def test_intervals_only_and_empty_predictions(recording, tmp_path):
    pred, gt, _, _ = recording
    only = timeline(tmp_path / "only.png", predictions=pred.drop(columns="score"), fps=30)
    png_size(only)
    empty = timeline(tmp_path / "empty.png", predictions=intervals([], True), fps=30)
    png_size(empty)
    missed = timeline(
        tmp_path / "missed.png", predictions=intervals([], True), fps=200, ground_truth=gt
    )
    assert missed.stat().st_size > only.stat().st_size / 4  # the ground truth is drawn
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.png", "missed.png", "only.png"]


def test_format_follows_the_suffix_and_rewrites_replace(recording, tmp_path):
    pred, gt, _, _ = recording
    svg = timeline(tmp_path / "t.svg", predictions=pred, fps=30, ground_truth=gt)
    assert svg.read_text().lstrip().startswith("<?xml")
    path = tmp_path / "t.png"
    path.write_text("old")
    timeline(path, predictions=pred, fps=30)
    png_size(path)
    with pytest.raises(UserError, match=r"t\.txt: cannot write a \.txt figure"):
        timeline(tmp_path / "t.txt", predictions=pred, fps=30)
    assert not (tmp_path / "t.txt").exists()


def test_bad_inputs_are_user_errors(tmp_path):
    pred = intervals([(1, 5, "mae")])
    with pytest.raises(UserError, match=r"shape \(T, 2\)"):
        timeline(tmp_path / "a.png", predictions=pred, fps=30, scores=np.zeros(5), frames=None)
    with pytest.raises(UserError, match="pass frames="):
        timeline(tmp_path / "a.png", predictions=pred, fps=30, scores=np.zeros((5, 2)))
    with pytest.raises(UserError, match="fps must be a positive"):
        timeline(tmp_path / "a.png", predictions=pred, fps=0)
    with pytest.raises(UserError, match="unknown type"):
        timeline(tmp_path / "a.png", predictions=intervals([(1, 5, "macro")]), fps=30)
    assert list(tmp_path.iterdir()) == []


def test_threads_draw_side_by_side(recording, tmp_path):
    """No pyplot state: figures drawn at once in threads are both complete."""
    pred, gt, scores, frames = recording

    def draw(name):
        return timeline(
            tmp_path / name, predictions=pred, fps=30, scores=scores, frames=frames, ground_truth=gt
        )

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(draw, ["a.png", "b.png"])
    assert a.read_bytes() == b.read_bytes()


# --- mespot-plot --------------------------------------------------------------------------------

GROUND_TRUTH = """subject,video,onset,apex,offset,type
s15,15_0101,557,572,608,macro-expression
s15,15_0101,699,703,707,micro-expression
s16,16_0101,10,20,40,macro-expression
"""

# 15_0101: a MaE hit and an ME spotted as MaE (FP; the ME is missed).
PREDICTIONS = """subject,video,onset,offset,type,score
s15,15_0101,560,610,mae,0.9
s15,15_0101,699,707,mae,0.4
s15,15_0102,400,420,me,0.3
s16,16_0101,12,40,mae,0.8
"""


def run(*args, cwd):
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def files(tmp_path):
    (tmp_path / "gt.csv").write_text(GROUND_TRUTH)
    (tmp_path / "pred.csv").write_text(PREDICTIONS)
    return tmp_path


def test_cli_writes_the_timeline_of_one_video(files):
    # 15_0101 is the integer 150101 to Hydra's parser: the name must survive as typed
    result = run("predictions=pred.csv", "video=15_0101", "ground_truth=gt.csv", cwd=files)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "s15 15_0101: 2 predictions (1 TP, 1 FP), 2 ground truth (1 found); "
        "30 fps (default; SAMM-LV needs fps=200 or data=sammlv)",
        "wrote timeline.png",
    ]
    assert png_size(files / "timeline.png")[0] >= 800
    assert sorted(p.name for p in files.iterdir()) == ["gt.csv", "pred.csv", "timeline.png"]


def test_cli_subject_fps_from_data_and_out(files):
    with (files / "pred.csv").open("a") as f:
        f.write("s99,15_0101,1,20,me,0.7\n")  # a second subject with a video of that name
    result = run("predictions=pred.csv", "video=15_0101", cwd=files)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: video '15_0101' is under subjects s15, s99 in pred.csv: "
        "add subject=… to the command"
    )
    result = run(
        "predictions=pred.csv", "video=15_0101", "subject=s99", "data=sammlv", "out=f/t.png",
        cwd=files,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "s99 15_0101: 1 predictions; 200 fps (data=sammlv)"
    png_size(files / "f" / "t.png")


def test_cli_unknown_video_is_one_line_naming_video_and_file(files):
    result = run("predictions=pred.csv", "video=15_0199", "ground_truth=gt.csv", cwd=files)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: no video '15_0199' in pred.csv or gt.csv; videos there: 15_0101, 15_0102, 16_0101"
    )
    assert not (files / "timeline.png").exists()
