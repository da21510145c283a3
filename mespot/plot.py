"""Timeline figures of one video's spotting results: score curves, spotted intervals, ground truth.

One panel per type (MaE on top, ME below) over a time axis in seconds (frames on the top axis):
the per-frame score curve and the threshold (dashed), each spotted interval as a span shaded by
its score (TP green, FP red when ground truth is given, scores written above the spans), the
ground truth as its own row of spans under the curve (solid: found; low, light: missed) and,
from mespot-spot, the spans without a face (grey, hatched: nothing is spotted there).

TP / FP are decided as mespot-evaluate counts them (`mark_hits`): same type, inclusive-frame
IoU >= 0.5, one-to-one (`strict`) unless told otherwise, so the colours agree with metrics.json.

Static files only (PNG; PDF or SVG by the file's suffix). An interactive HTML timeline would need
plotly (or bokeh): a heavy dependency for what a PNG wide enough to zoom into already shows.

Drawn with matplotlib's object API (`Figure` + `FigureCanvasAgg`), never pyplot: no global state,
no GUI backend to select, safe in threads and beside code that set pyplot up another way.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from mespot.errors import UserError
from mespot.files import atomic_write_bytes
from mespot.intervals import TYPE_NAMES, TYPES
from mespot.metrics import check_matching, match

__all__ = ["mark_hits", "timeline"]

DPI = 100
# Width grows with the recording so that a 10-minute video stays readable (≈ 28 in, 2,800 px),
# up to a cap that image viewers still handle.
MIN_WIDTH, MAX_WIDTH, INCHES_PER_SECOND = 8.0, 36.0, 1 / 25
PANEL_HEIGHT = 2.4
MAX_SCORE_LABELS = 120  # per panel; beyond that the shading alone shows the scores

COLOURS = {
    "curve": "0.25",
    "threshold": "tab:purple",
    "tp": "tab:green",
    "fp": "tab:red",
    "spotted": "tab:orange",  # no ground truth: nothing to call TP or FP
    "gt": "tab:blue",
    "no_face": "0.55",
}
SPAN = (0.0, 1.0)  # spotted intervals cover the score range
GT_ROW = (-0.25, 0.17)  # (bottom, height) of the ground-truth row, under the curve
GT_MISSED_ROW = (GT_ROW[0], GT_ROW[1] * 0.5)
LABEL_Y = 1.01


def mark_hits(
    predictions: pd.DataFrame,
    ground_truth: pd.DataFrame | None,
    *,
    iou: float = 0.5,
    matching: str = "strict",
) -> tuple[np.ndarray, np.ndarray]:
    """Which predictions are true positives, and which ground-truth intervals were found.

    For the intervals of one video (rows onset, offset, type[, score]); returns two boolean
    arrays in row order. A prediction is a TP when `mespot.metrics.match` pairs it with a
    ground truth of the same type (IoU >= `iou`; `strict`: one-to-one, so a second prediction on
    an already found interval is a FP — exactly what mespot-evaluate counts).
    """
    check_matching(matching)
    hit = np.zeros(len(predictions), dtype=bool)
    found = np.zeros(0 if ground_truth is None else len(ground_truth), dtype=bool)
    if ground_truth is None:
        return hit, found
    for kind in TYPES:
        p = np.flatnonzero(predictions["type"].to_numpy() == kind)
        g = np.flatnonzero(ground_truth["type"].to_numpy() == kind)
        scores = predictions["score"].to_numpy()[p] if "score" in predictions else None
        pairs = match(
            _frames(predictions)[p], _frames(ground_truth)[g], scores, iou=iou, matching=matching
        )
        for i, j in pairs:
            hit[p[i]] = True
            found[g[j]] = True
    return hit, found


def timeline(
    path: str | os.PathLike,
    *,
    predictions: pd.DataFrame,
    fps: float,
    scores: np.ndarray | None = None,
    frames: np.ndarray | None = None,
    ground_truth: pd.DataFrame | None = None,
    thresholds: Mapping[str, float] | None = None,
    title: str = "",
    iou: float = 0.5,
    matching: str = "strict",
    face_missing: np.ndarray | None = None,
) -> Path:
    """Draw one video's timeline and write it atomically to `path`; returns the path.

    predictions: rows onset, offset (inclusive frame numbers), type ('mae' | 'me'), optional
    score. scores: (T, 2) per-frame MaE and ME scores in [0, 1] at frame numbers `frames` (T,);
    None draws the intervals only. ground_truth: rows onset, offset, type, or None. thresholds:
    {type: score threshold}, each drawn as a dashed line over its panel's score curve.
    iou / matching: how TP and FP are decided (`mark_hits`). face_missing: (N, 2) first and
    last frame numbers of each span without a face (mespot-spot), drawn as a grey band in every
    panel. The format follows the suffix
    (.png, .pdf, .svg, …). Frame f is drawn over [f / fps, (f + 1) / fps) seconds, so a
    one-frame interval keeps a width.
    """
    path = Path(path)
    fmt = path.suffix[1:].lower()
    try:
        rate = float(fps)
    except (TypeError, ValueError):
        rate = math.nan
    if not (math.isfinite(rate) and rate > 0):
        raise UserError(f"fps must be a positive number of frames per second, got {fps!r}")
    fps = rate
    predictions = _check_intervals(predictions, "predictions")
    if ground_truth is not None:
        ground_truth = _check_intervals(ground_truth, "ground_truth")
    scores, frames = _check_scores(scores, frames)
    hit, found = mark_hits(predictions, ground_truth, iou=iou, matching=matching)

    lo, hi = _frame_range(predictions, ground_truth, frames)
    duration = (hi + 1 - lo) / fps
    width = min(MAX_WIDTH, max(MIN_WIDTH, 4.0 + duration * INCHES_PER_SECOND))
    fig = Figure(figsize=(width, 1.2 + PANEL_HEIGHT * len(TYPES)), dpi=DPI, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    supported = canvas.get_supported_filetypes()
    if fmt not in supported:
        raise UserError(
            f"{path}: cannot write a .{fmt or '(no suffix)'} figure; "
            f"use a file name ending in .png, .pdf or .svg"
        )
    axes = fig.subplots(len(TYPES), 1, sharex=True)
    no_face = np.asarray([] if face_missing is None else face_missing, np.int64).reshape(-1, 2)
    for k, (ax, kind) in enumerate(zip(axes, TYPES, strict=True)):
        _no_face(ax, no_face, fps)
        rows = predictions["type"].to_numpy() == kind
        gt_rows = None if ground_truth is None else ground_truth["type"].to_numpy() == kind
        _panel(
            ax,
            kind,
            fps,
            predictions[rows],
            hit[rows],
            None if ground_truth is None else ground_truth[gt_rows],
            None if ground_truth is None else found[gt_rows],
            None if scores is None else (frames, scores[:, k]),
            None if thresholds is None else thresholds.get(kind),
        )
    pad = max(0.005 * duration, 0.25)  # seconds
    axes[-1].set_xlim(lo / fps - pad, (hi + 1) / fps + pad)
    axes[-1].set_xlabel("time (s)")
    top = axes[0].secondary_xaxis("top", functions=(lambda s: s * fps, lambda f: f / fps))
    top.set_xlabel("frame", fontsize=8)
    top.tick_params(labelsize=7)
    fig.legend(
        handles=_legend(predictions, ground_truth, scores, thresholds, iou, len(no_face) > 0),
        loc="outside lower center",
        ncols=6,
        fontsize=8,
        frameon=False,
    )
    if title:
        fig.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    canvas.print_figure(buffer, format=fmt, dpi=DPI)
    return atomic_write_bytes(path, buffer.getvalue())


def _panel(ax, kind, fps, predictions, hit, ground_truth, found, curve, threshold) -> None:
    name = TYPE_NAMES[kind]
    if curve is not None:
        frames, values = curve
        ax.plot((frames + 0.5) / fps, values, lw=0.6, color=COLOURS["curve"])
        if threshold is not None:
            ax.axhline(threshold, ls="--", lw=0.8, color=COLOURS["threshold"])
            ax.text(
                0.995,
                threshold,
                f"{threshold:.2f}",
                transform=ax.get_yaxis_transform(),
                ha="right",
                va="bottom",
                fontsize=6,
                color=COLOURS["threshold"],
            )
    scored = "score" in predictions
    shade = predictions["score"].clip(0, 1).to_numpy() if scored else np.full(len(predictions), 0.6)
    if ground_truth is None:
        colours = [COLOURS["spotted"]] * len(predictions)
    else:
        colours = [COLOURS["tp"] if h else COLOURS["fp"] for h in hit]
    ax.broken_barh(
        _spans(predictions, fps),
        SPAN,
        facecolors=[to_rgba(c, 0.12 + 0.5 * s) for c, s in zip(colours, shade, strict=True)],
        edgecolors=[to_rgba(c, 0.9) for c in colours],
        linewidth=0.5,  # keeps a one-frame interval visible on a 10-minute axis
    )
    if scored and len(predictions) <= MAX_SCORE_LABELS:
        for (start, _), score in zip(_spans(predictions, fps), shade, strict=True):
            ax.text(start, LABEL_Y, f"{score:.2f}", rotation=90, fontsize=5.5, va="bottom")
    yticks, ylabels = ([0, 0.5, 1], ["0", "0.5", "1"]) if curve is not None else ([], [])
    bottom = -0.04
    if ground_truth is not None:
        ax.broken_barh(
            _spans(ground_truth[found], fps),
            GT_ROW,
            facecolors=to_rgba(COLOURS["gt"], 0.85),
            edgecolors=COLOURS["gt"],
            linewidth=0.5,
        )
        ax.broken_barh(  # missed: a lower, light bar, told apart even when a few pixels wide
            _spans(ground_truth[~found], fps),
            GT_MISSED_ROW,
            facecolors=to_rgba(COLOURS["gt"], 0.2),
            edgecolors=COLOURS["gt"],
            linewidth=0.8,
        )
        yticks, ylabels = [GT_ROW[0] + GT_ROW[1] / 2, *yticks], ["GT", *ylabels]
        bottom = GT_ROW[0] - 0.05
        summary = (
            f"{name}: {len(predictions)} spotted ({int(hit.sum())} TP, "
            f"{int((~hit).sum())} FP), {len(ground_truth)} ground truth "
            f"({int(found.sum())} found)"
        )
    else:
        summary = f"{name}: {len(predictions)} spotted"
    ax.set_ylim(bottom, 1.22 if scored else 1.05)
    ax.set_yticks(yticks, ylabels, fontsize=7)
    ax.set_ylabel(f"{name} score" if curve is not None else name, fontsize=9)
    ax.set_title(summary, loc="left", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", lw=0.3, alpha=0.5)


def _no_face(ax, spans: np.ndarray, fps: float) -> None:
    """Grey, hatched bands behind everything over the frames without a face."""
    for first, last in spans:
        ax.axvspan(first / fps, (last + 1) / fps, facecolor=to_rgba(COLOURS["no_face"], 0.3),
                   edgecolor=COLOURS["no_face"], hatch="//", linewidth=0, zorder=0)  # fmt: skip


def _legend(predictions, ground_truth, scores, thresholds, iou, no_face=False) -> list:
    handles = []
    if scores is not None:
        handles.append(Line2D([], [], lw=0.8, color=COLOURS["curve"], label="per-frame score"))
        if thresholds:
            handles.append(
                Line2D(
                    [],
                    [],
                    ls="--",
                    lw=0.8,
                    color=COLOURS["threshold"],
                    label="threshold (chosen on validation)",
                )
            )
    shaded = " (shade: score)" if "score" in predictions else ""
    if ground_truth is None:
        handles.append(Patch(color=COLOURS["spotted"], alpha=0.6, label=f"spotted{shaded}"))
    else:
        handles += [
            Patch(color=COLOURS["tp"], alpha=0.6, label=f"spotted TP (IoU ≥ {iou:g}){shaded}"),
            Patch(color=COLOURS["fp"], alpha=0.6, label="spotted FP"),
            Patch(color=COLOURS["gt"], alpha=0.85, label="ground truth, found"),
            Patch(
                facecolor=to_rgba(COLOURS["gt"], 0.2),
                edgecolor=COLOURS["gt"],
                label="ground truth, missed (low bar)",
            ),
        ]
    if no_face:
        handles.append(Patch(facecolor=to_rgba(COLOURS["no_face"], 0.3),
                             edgecolor=COLOURS["no_face"], hatch="//",
                             label="no face: not spotted"))  # fmt: skip
    return handles


def _frames(table: pd.DataFrame) -> np.ndarray:
    return table[["onset", "offset"]].to_numpy(dtype=np.int64).reshape(-1, 2)


def _spans(table: pd.DataFrame, fps: float) -> list[tuple[float, float]]:
    """(start, width) in seconds of inclusive frame intervals."""
    return [(on / fps, (off + 1 - on) / fps) for on, off in _frames(table)]


def _frame_range(predictions, ground_truth, frames) -> tuple[int, int]:
    """First and last frame to show: the scored frames, or else the intervals' extent."""
    if frames is not None and len(frames):
        lo, hi = int(frames.min()), int(frames.max())
    else:
        lo, hi = math.inf, -math.inf
    for table in (predictions, ground_truth):
        if table is not None and len(table):
            lo, hi = min(lo, int(table["onset"].min())), max(hi, int(table["offset"].max()))
    return (0, 0) if lo > hi else (lo, hi)


def _check_intervals(table: pd.DataFrame, name: str) -> pd.DataFrame:
    missing = [c for c in ("onset", "offset", "type") if c not in table.columns]
    if missing:
        raise UserError(f"{name}: missing column(s) {', '.join(missing)}")
    unknown = sorted(set(table["type"]) - set(TYPES))
    if unknown:
        raise UserError(f"{name}: unknown type(s) {', '.join(map(str, unknown))}; expected mae, me")
    return table.reset_index(drop=True)


def _check_scores(scores, frames) -> tuple[np.ndarray | None, np.ndarray | None]:
    if scores is None:
        return None, None
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or scores.shape[1] != len(TYPES):
        raise UserError(f"scores must have shape (T, 2) (MaE, ME), got {scores.shape}")
    if frames is None:
        raise UserError("scores need the frame number of each row: pass frames=")
    frames = np.asarray(frames, dtype=float).reshape(-1)
    if len(frames) != len(scores):
        raise UserError(f"frames has {len(frames)} entries but scores has {len(scores)} rows")
    return scores, frames
