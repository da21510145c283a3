"""What spotting blind scores: the same fixed grid of intervals in every video, one per type.

The accuracy benchmark's mock is dense (3 macro- and 3 micro-expressions in every 20 s video),
so at IoU ≥ 0.5 a grid of intervals that never looks at a frame already matches many of them.
A method has learned to see expressions only where it beats this floor. Like every method of
the benchmark, each fold chooses its grid (an interval length and a step per type) on the other
subjects, never on its test subject.
"""

from __future__ import annotations

import pandas as pd

from mespot.data.tables import Annotations
from mespot.intervals import TYPES
from mespot.metrics import Counts, evaluate

# Candidate lengths and steps in the dataset's frames (at 30 fps: ME 0.13-0.5 s, MaE 0.7-4 s).
LENGTHS = {"me": range(4, 16), "mae": range(20, 121, 4)}
STEPS = {"me": range(4, 40, 2), "mae": range(16, 129, 8)}

Spans = dict[tuple[str, str], tuple[int, int]]  # (subject, video) → first and last frame number


def grid(spans: Spans, kind: str, length: int, step: int) -> pd.DataFrame:
    """Intervals of `length` frames every `step` frames over each video, typed `kind`."""
    rows = [
        (subject, video, start, start + length - 1, kind, 1.0)
        for (subject, video), (first, last) in spans.items()
        for start in range(first, last - length + 2, step)
    ]
    return pd.DataFrame(rows, columns=["subject", "video", "onset", "offset", "type", "score"])


def spans(annotations: Annotations) -> Spans:
    """Each video's first and last frame number, from the frames found on disk."""
    return {key: (f.first, f.last) for key, f in annotations.frames.items()}


def _within(truth: pd.DataFrame, spans: Spans) -> pd.DataFrame:
    return truth[[key in spans for key in zip(truth["subject"], truth["video"], strict=True)]]


def grid_counts(truth: pd.DataFrame, spans: Spans, kind: str) -> dict[tuple[int, int], Counts]:
    """Counts of `kind` for every candidate (length, step) on the videos of `spans`."""
    truth = _within(truth, spans)
    counts = {}
    for length in LENGTHS[kind]:
        for step in STEPS[kind]:
            found = evaluate(grid(spans, kind, length, step), truth, videos=list(spans))
            counts[length, step] = found.counts[kind]
    return counts


def best_grid(counts: dict[tuple[int, int], Counts]) -> tuple[int, int]:
    """The (length, step) with the highest F1 (the first of equals, in candidate order)."""
    return max(counts, key=lambda candidate: counts[candidate].f1)


def loso_chance(annotations: Annotations) -> dict:
    """Counts summed over leave-one-subject-out folds, each fold's grid chosen on the others:
    {"mae", "me", "overall": Counts.as_dict(), "grids": {subject: {type: [length, step]}}}.

    Every grid is scored once per subject; a fold's choice sums the other subjects' counts
    (matching is per video, so that is what scoring their videos together gives)."""
    truth, every = annotations.intervals, spans(annotations)
    subjects = sorted({s for s, _ in every})
    scored = {
        subject: {
            kind: grid_counts(truth, {k: v for k, v in every.items() if k[0] == subject}, kind)
            for kind in TYPES
        }
        for subject in subjects
    }
    totals = {kind: Counts() for kind in TYPES}
    grids = {}
    for subject in subjects:
        grids[subject] = {}
        for kind in TYPES:
            others = [scored[s][kind] for s in subjects if s != subject]
            pooled = {c: sum((o[c] for o in others), Counts()) for c in others[0]}
            grids[subject][kind] = best_grid(pooled)
            totals[kind] += scored[subject][kind][grids[subject][kind]]
    overall = totals["mae"] + totals["me"]
    return {**{k: c.as_dict() for k, c in totals.items()}, "overall": overall.as_dict(),
            "grids": grids}  # fmt: skip
