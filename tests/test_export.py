"""MEGC submission layouts: exact file text, sweep concatenation, and one-line errors."""

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_job as write_fold

from mespot.cli.export import merge_repeated
from mespot.errors import UserError
from mespot.export import (
    export_table,
    read_predictions,
    sweep_predictions,
    to_csv_text,
    to_megc,
    to_str,
)
from mespot.intervals import TYPES

SCRIPT = Path(sys.executable).parent / "mespot-export"

# Out of order on purpose; official type spellings mixed in; SAMM ids keep their zeros.
PREDICTIONS = """subject,video,onset,offset,type,score
s16,16_0101,30,45,micro-expression,0.5
s15,15_0102,400,420,me,0.3
s15,15_0101,699,707,me,0.4
s15,15_0101,557,608,mae,0.9
006,006_1,566,743,Macro,0.8
006,006_1,100,140,Micro - 1/2,0.2
"""

MEGC = """vid,onset,offset,type
006_1,100,140,me
006_1,566,743,mae
15_0101,557,608,mae
15_0101,699,707,me
15_0102,400,420,me
16_0101,30,45,me
"""

STR = """subject,video,onset,offset,emotion
006,006_1,100,140,unknown
s15,15_0101,699,707,unknown
s15,15_0102,400,420,unknown
s16,16_0101,30,45,unknown
"""


def run(*args, cwd):
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


@pytest.fixture
def pred(tmp_path):
    path = tmp_path / "pred.csv"
    path.write_text(PREDICTIONS)
    return path


def test_both_layouts_exact_text(pred):
    predictions = read_predictions([pred])
    assert to_csv_text(to_megc(predictions)) == MEGC
    assert to_csv_text(to_str(predictions)) == STR
    assert to_csv_text(export_table(predictions, "str", types=TYPES)).count("\n") == 7
    same = to_csv_text(to_megc(predictions.sample(frac=1, random_state=0)))
    assert same == MEGC, "the order does not depend on the input order"


def test_ties_are_ordered_by_offset_then_type():
    table = pd.DataFrame({"subject": ["a"] * 3, "video": ["v"] * 3, "onset": [5, 5, 5],
                          "offset": [9, 7, 7], "type": ["me", "me", "mae"]})  # fmt: skip
    assert to_csv_text(to_megc(table)).splitlines()[1:] == ["v,5,7,mae", "v,5,7,me", "v,5,9,me"]


def test_dataframe_errors_name_the_row():
    good = read_predictions_text(PREDICTIONS)
    with pytest.raises(UserError, match=r"missing column\(s\) type"):
        to_megc(good.drop(columns="type"))
    bad = good.copy()
    bad.loc[3, "type"] = "blink"
    with pytest.raises(UserError, match=r"predictions row 3: unknown type 'blink'"):
        to_str(bad)
    bad = good.copy()
    bad["onset"] = bad["onset"].astype(float)
    bad.loc[1, "onset"] = 400.5
    with pytest.raises(UserError, match=r"predictions row 1: onset 400.5 is not a whole frame"):
        to_megc(bad)


@pytest.mark.parametrize("emotion", ["negative", "Others", "happiness", "", "a,b"])
def test_the_placeholder_is_never_an_emotion_class(emotion):
    with pytest.raises(UserError, match="placeholder"):
        to_str(read_predictions_text(PREDICTIONS), emotion=emotion)


def test_a_video_in_two_files_is_refused(tmp_path, pred):
    other = tmp_path / "other.csv"
    other.write_text("subject,video,onset,offset,type\ns15,15_0101,1,20,me\n")
    with pytest.raises(UserError, match=r"other.csv: video 15_0101 \(subject s15\) is also in"):
        read_predictions([pred, other])


def test_repeated_predictions_become_one_hydra_list():
    argv = ["predictions=a.csv", "format=megc", "predictions=it's b.csv", "out=x"]
    assert merge_repeated(argv) == ["predictions=['a.csv','it\\'s b.csv']", "format=megc", "out=x"]
    assert merge_repeated(["predictions=a.csv", "out=x"]) == ["predictions=a.csv", "out=x"]
    with pytest.raises(UserError, match="not both"):
        merge_repeated(["predictions=[a.csv]", "predictions=b.csv"])


def read_predictions_text(text):
    """A predictions DataFrame built in Python (no file, so no line numbers)."""
    return pd.read_csv(StringIO(text), dtype={"subject": str, "video": str})


# --- sweeps -------------------------------------------------------------------------------


def write_job(sweep, job, subject, rows, settings=(), finished=True, mtime=None):
    """A job folder as mespot-train leaves it (conftest.write_job), with its predictions.csv; an
    unfinished one holds failed.txt instead of metrics.json."""
    folder = write_fold(sweep, job, subject, settings, counts=(1, 1, 1) if finished else None)
    if rows is not None:
        lines = ["subject,video,onset,offset,type,score"]
        lines += [f"{subject},{video},{on},{off},{t},0.5" for video, on, off, t in rows]
        (folder / "predictions.csv").write_text("\n".join(lines) + "\n")
    if not finished:
        (folder / "failed.txt").write_text("Traceback …\nRuntimeError: CUDA out of memory\n")
    elif mtime is not None:
        os.utime(folder / "metrics.json", (mtime, mtime))
    return folder


@pytest.fixture
def sweep(tmp_path):
    """s16 and s15 finished (s15 twice: the newer run counts), s19 failed."""
    root = tmp_path / "sweep"
    write_job(root, "0", "s16", [("16_0101", 30, 45, "me"), ("16_0102", 5, 80, "mae")])
    write_job(root, "1", "s15", [("15_0101", 1, 2, "me")], mtime=1e9)  # superseded
    write_job(root, "rerun-s15", "s15", [("15_0101", 557, 608, "mae")], mtime=2e9)
    write_job(root, "2", "s19", None, finished=False)
    return root


def test_a_sweep_is_one_submission(sweep, tmp_path):
    result = run(f"sweep={sweep}", "format=megc", "out=sub.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sub.csv").read_text() == (
        "vid,onset,offset,type\n15_0101,557,608,mae\n16_0101,30,45,me\n16_0102,5,80,mae\n"
    )
    assert result.stdout.strip() == (
        "wrote sub.csv: 3 rows (MaE 2, ME 1) in the megc layout, from 2 file(s)"
    )
    assert result.stderr.strip() == (
        f"warning: fold s19 ({sweep / '2'}) did not finish (RuntimeError: CUDA out of memory); "
        "not exported"
    )


def test_a_grid_sweep_needs_the_experiment(tmp_path):
    root = tmp_path / "grid"
    for i, (w, s) in enumerate([(1, "a"), (1, "b"), (2, "a")]):
        write_job(root, str(i), s, [(f"{s}_v", 10 * w, 20 * w, "me")], (f"model.loss.iou={w}",))
    with pytest.raises(UserError, match=r"2 experiments; .*'model.loss.iou=1'; 'model.loss.iou=2'"):
        sweep_predictions(root)
    files, warnings = sweep_predictions(root, "model.loss.iou=1")
    assert files == [root / "0" / "predictions.csv", root / "1" / "predictions.csv"]
    assert warnings == []
    files, _ = sweep_predictions(root, "model.loss.iou=2")
    assert files == [root / "2" / "predictions.csv"]
    with pytest.raises(UserError, match="no experiment 'x'"):
        sweep_predictions(root, "x")


def test_a_finished_fold_without_predictions_is_an_error(tmp_path):
    root = tmp_path / "sweep"
    write_job(root, "0", "s15", None)
    with pytest.raises(UserError, match=r"0/predictions.csv: file not found \(fold s15"):
        sweep_predictions(root)


# --- the command ----------------------------------------------------------------------------


def test_command_writes_both_layouts_from_repeated_files(tmp_path):
    head, body = PREDICTIONS.split("\n", 1)
    rows = body.strip().splitlines()
    (tmp_path / "a.csv").write_text("\n".join([head, *rows[:4]]) + "\n")
    (tmp_path / "b.csv").write_text("\n".join([head, *rows[4:]]) + "\n")
    files = ["predictions=a.csv", "predictions=b.csv"]
    result = run(*files, "format=megc", "out=out/megc.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/megc.csv").read_text() == MEGC
    result = run(*files, "format=str", "out=str.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "str.csv").read_text() == STR
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv", "out", "str.csv"]


@pytest.mark.parametrize(
    ("text", "args", "message"),
    [
        ("subject,video,onset,type\ns15,v,1,me\n", ["format=megc"],
         "error: pred.csv: missing column(s) offset; found subject, video, onset, type"),
        (PREDICTIONS + "s15,15_0101,900,950,blink,0.1\n", ["format=str"],
         "error: pred.csv line 8: unknown type 'blink' (expected mae or me; accepted aliases: "
         "macro, micro, macro-expression, micro-expression, Macro, Micro - 1/2)"),
        (PREDICTIONS, ["format=csv"], "error: unknown format 'csv'; expected one of megc, str"),
        (PREDICTIONS, [], "error: format is required: add format=… to the command"),
    ],
)  # fmt: skip
def test_errors_are_one_line_exit_2_and_write_nothing(tmp_path, text, args, message):
    (tmp_path / "pred.csv").write_text(text)
    result = run("predictions=pred.csv", *args, "out=sub.csv", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert not (tmp_path / "sub.csv").exists()
