"""`mespot-evaluate` as a user runs it: the installed console script on small CSV files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).parent / "mespot-evaluate"

GROUND_TRUTH = """subject,video,onset,apex,offset,type
s15,15_0101,557,572,608,macro-expression
s15,15_0101,699,703,707,micro-expression
s15,15_0102,100,110,130,macro-expression
s16,16_0101,10,20,40,macro-expression
"""

# 15_0101: MaE hit, ME predicted as MaE (wrong type); 15_0102: missed; 16_0101: absent (all FN).
PREDICTIONS = """subject,video,onset,offset,type,score
s15,15_0101,560,610,mae,0.9
s15,15_0101,699,707,mae,0.4
s15,15_0102,400,420,me,0.3
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


def test_prints_the_table_and_writes_metrics_json(files):
    result = run("predictions=pred.csv", "ground_truth=gt.csv", cwd=files)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[2:5]}
    # columns: n_pred n_gt TP FP FN precision recall F1
    assert rows["MaE"] == ["2", "3", "1", "1", "2", "0.5000", "0.3333", "0.4000"]
    assert rows["ME"] == ["1", "1", "0", "1", "1", "0.0000", "0.0000", "0.0000"]
    assert rows["Overall"] == ["3", "4", "1", "2", "3", "0.3333", "0.2500", "0.2857"]
    metrics = json.loads((files / "metrics.json").read_text())
    assert metrics["matching"] == "strict" and metrics["iou"] == 0.5
    assert metrics["overall"]["tp"] == 1 and metrics["overall"]["f1"] == pytest.approx(2 / 7)
    assert not list(files.glob("outputs")), "the scoring tool must not leave Hydra run folders"


def test_options_out_log_matching_and_iou(files):
    result = run(
        "predictions=pred.csv",
        "ground_truth=gt.csv",
        "matching=megc2020",
        "iou=0.3",
        "out=scores/m.json",
        "log=scores/pairs.log",
        cwd=files,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((files / "scores/m.json").read_text())
    assert metrics["matching"] == "megc2020" and metrics["iou"] == 0.3
    log = (files / "scores/pairs.log").read_text().splitlines()
    assert "15_0101 557 608 560 610 TP mae" in log
    assert "16_0101 10 40 - - FN mae" in log
    assert "15_0102 - - 400 420 FP me" in log
    assert len(log) == 6  # 1 TP + 3 FN + 2 FP


def test_bad_row_is_one_line_naming_file_and_line(files):
    (files / "pred.csv").write_text(PREDICTIONS + "s15,15_0101,900,800,me,0.1\n")
    result = run("predictions=pred.csv", "ground_truth=gt.csv", cwd=files)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: pred.csv line 5: onset 900 is after offset 800"
    assert not (files / "metrics.json").exists()


def test_unknown_type_in_ground_truth_is_one_line(files):
    (files / "gt.csv").write_text(GROUND_TRUTH.replace("micro-expression", "blink"))
    result = run("predictions=pred.csv", "ground_truth=gt.csv", cwd=files)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "gt.csv line 3: unknown type 'blink'" in result.stderr


def test_bad_setting_is_one_line(files):
    result = run("predictions=pred.csv", "ground_truth=gt.csv", "matching=loose", cwd=files)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: matching='loose' is not known")


def test_prediction_for_unlisted_video_is_an_error_with_videos_csv(files):
    (files / "videos.csv").write_text("subject,video\ns15,15_0101\ns16,16_0101\n")
    result = run("predictions=pred.csv", "ground_truth=gt.csv", "videos=videos.csv", cwd=files)
    assert result.returncode == 2
    assert "unknown video(s): s15/15_0102" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_required_setting_is_one_line(files):
    result = run("ground_truth=gt.csv", cwd=files)
    assert result.returncode == 2
    expected = "error: predictions is required: add predictions=… to the command"
    assert result.stderr.strip() == expected
