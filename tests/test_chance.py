"""The accuracy benchmark's chance row: a fixed grid of intervals, chosen without the test
subject."""

from pathlib import Path

import pandas as pd

from mespot.bench.chance import best_grid, grid, grid_counts, loso_chance, spans
from mespot.data.frames import FrameList
from mespot.data.tables import INTERVAL_COLUMNS, Annotations
from mespot.metrics import evaluate


def annotations(mae_every: dict[str, int], frames: int = 600) -> Annotations:
    """One video per subject, 40-frame macro-expressions every `mae_every[subject]` frames from
    frame 1, and one 10-frame micro-expression at frame 301."""
    rows, spans = [], {}
    for subject, every in mae_every.items():
        video = f"{subject}_01"
        rows += [(subject, video, on, on + 10, on + 39, "mae") for on in range(1, 561, every)]
        rows.append((subject, video, 301, 303, 310, "me"))
        spans[(subject, video)] = FrameList(tuple(range(1, frames + 1)), ())
    intervals = pd.DataFrame(rows, columns=INTERVAL_COLUMNS)
    return Annotations("casme2", Path("x.xlsx"), intervals, pd.DataFrame(), frames=spans)


def test_grid_tiles_each_video_from_its_first_frame():
    g = grid({("s1", "v"): (1, 100), ("s2", "w"): (11, 60)}, "me", 20, 30)
    assert list(zip(g["video"], g["onset"], g["offset"], strict=True)) == [
        ("v", 1, 20), ("v", 31, 50), ("v", 61, 80), ("w", 11, 30), ("w", 41, 60)
    ]  # fmt: skip
    assert set(g["type"]) == {"me"}


def test_a_periodic_dataset_is_found_by_its_grid():
    a = annotations({"a": 80})
    length, step = best_grid(grid_counts(a.intervals, spans(a), "mae"))
    found = evaluate(grid(spans(a), "mae", length, step), a.intervals[a.intervals.type == "mae"])
    assert step == 80 and found.counts["mae"].f1 == 1.0


def test_each_fold_picks_its_grid_on_the_other_subjects():
    """Subject c repeats every 120 frames, the others every 80: c's fold gets their grid, which
    misses c's expressions, while a and b, judged by grids that fit them, are found."""
    a = annotations({"a": 80, "b": 80, "c": 120})
    result = loso_chance(a)
    ab = {key: span for key, span in spans(a).items() if key[0] != "c"}
    assert result["grids"]["c"]["mae"] == best_grid(grid_counts(a.intervals, ab, "mae"))
    assert result["grids"]["c"]["mae"][1] == 80
    per_type = result["mae"]
    assert per_type["n_gt"] == 7 + 7 + 5 and per_type["tp"] < per_type["n_gt"]
    assert result["overall"]["tp"] == result["mae"]["tp"] + result["me"]["tp"]
