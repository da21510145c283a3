"""From per-window model outputs to a video's predictions, in the dataset's own frame numbers.

The model sees windows of L cached frames; for each window it predicts candidate intervals
(float positions inside the window, inclusive), a score and a class (0 = mae, 1 = me).
`postprocess_video` turns them into rows of predictions.csv, in the dataset's own frame numbers:

    to_video (add the window start) → merge_windows (concatenate, clip to the video)
    → score threshold → to_source_frames (cached index → dataset frame number)
    → duration_filter (seconds) → per_class_nms (metric IoU) → cap per video → predictions_table

Order: the score threshold comes first because hard NMS gives the same survivors either way (a
candidate is only suppressed by higher-scoring ones) and NMS then has less to do. The duration
filter runs before NMS so that a candidate it would drop cannot suppress a valid one. NMS runs on
source frame numbers, so its IoU is exactly the metric's.

Windows overlap (stride < L), so one expression is predicted by several windows; NMS keeps the
best-scored of them. An expression cut by an inner window edge is predicted truncated by that
window and whole by a neighbouring one; the truncated candidate is kept as it is, not
down-weighted: NMS keeps whichever the model scored higher.

`best_thresholds` picks one score threshold per type on validation subjects (never the test
subject).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from mespot.errors import UserError
from mespot.intervals import KEY, TYPES
from mespot.metrics import evaluate, interval_iou, match

COLUMNS = [*KEY, "onset", "offset", "type", "score"]
MAX_CANDIDATES = 100  # score thresholds per type tried by best_thresholds when none are given

Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]  # segments (N, 2), scores (N,), labels (N,)


def to_video(start: int, segments, scores, labels) -> Outputs:
    """One window's outputs in cached-frame positions of the video (window start added).

    Accepts numpy arrays or (CPU or GPU) torch tensors, so decoded model outputs go in as they are.
    """
    segments = _numpy(segments).astype(np.float64).reshape(-1, 2) + int(start)
    scores = _numpy(scores).astype(np.float64).reshape(-1)
    labels = _numpy(labels).astype(np.int64).reshape(-1)
    return segments, scores, labels


def _numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def merge_windows(parts: Sequence[Outputs], n_frames: int) -> Outputs:
    """All windows' candidates of one video, clipped to its cached frames [0, n_frames - 1].

    Duplicates from overlapping windows stay; NMS removes them. Candidates lying wholly outside
    the video (in a last window's padding) are dropped rather than clipped to a one-frame stub.
    """
    segments = np.concatenate([np.empty((0, 2))] + [p[0] for p in parts])
    scores = np.concatenate([np.empty(0)] + [p[1] for p in parts])
    labels = np.concatenate([np.empty(0, dtype=np.int64)] + [p[2] for p in parts])
    inside = (segments[:, 1] >= -0.5) & (segments[:, 0] < n_frames - 0.5)  # after rounding
    return np.clip(segments[inside], 0, n_frames - 1), scores[inside], labels[inside]


def nms_1d(segments, scores, iou_threshold: float) -> np.ndarray:
    """Hard NMS on frame numbers: indices kept, highest score first (equal scores: the earlier
    index first). IoU is the metric's (inclusive frames).

    A candidate is suppressed when its IoU with a kept one is strictly above the threshold (as in
    torchvision.ops.nms): intervals overlapping exactly at the threshold both stay, and
    iou_threshold=1 suppresses nothing.
    """
    if not 0.0 <= iou_threshold <= 1.0:
        raise UserError(f"iou_threshold={iou_threshold!r} must be in [0, 1]")
    segments = np.asarray(segments).reshape(-1, 2)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    kept = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(best)
        order = rest[interval_iou(segments[best : best + 1], segments[rest])[0] <= iou_threshold]
    return np.array(kept, dtype=np.int64)


def per_class_nms(segments, scores, labels, iou_threshold: float) -> np.ndarray:
    """NMS within each class (an ME inside a MaE is a separate finding): indices kept, highest
    score first over all classes."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    kept = [np.empty(0, dtype=np.int64)]
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        kept.append(members[nms_1d(segments[members], scores[members], iou_threshold)])
    kept = np.concatenate(kept)
    return kept[np.argsort(-scores[kept], kind="stable")]


def duration_filter(
    segments, labels, limits: Mapping[str, Sequence[float | None]], fps: float
) -> np.ndarray:
    """Mask of candidates whose duration is within their type's (min, max) seconds, inclusive.

    Segments are source frame numbers (inclusive) and fps the source rate, so one setting, e.g.
    {"me": (None, 0.5)}, means the same at 30 and 200 fps. None or a missing type: no bound.
    """
    unknown = set(limits) - set(TYPES)
    if unknown:
        raise UserError(f"duration limits for unknown type(s) {sorted(unknown)}; use mae or me")
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(labels)
    seconds = (segments[:, 1] - segments[:, 0] + 1) / fps
    keep = np.ones(len(segments), dtype=bool)
    for label, type_ in enumerate(TYPES):
        low, high = limits.get(type_, (None, None))
        of_type = labels == label
        if low is not None:
            keep &= ~of_type | (seconds >= low)
        if high is not None:
            keep &= ~of_type | (seconds <= high)
    return keep


def to_source_frames(segments, source_frames: Sequence[int]) -> np.ndarray:
    """Cached positions (N, 2) → the dataset's own frame numbers (N, 2), onset ≤ offset.

    Positions round half up to the nearest cached index, clipped to the video. The onset is the
    source frame of its index; the offset is the last source frame its index stands for (up to
    the next kept frame), so a resampled video's intervals cover the frames dropped between.
    """
    source = np.asarray(source_frames, dtype=np.int64)
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    index = np.clip(np.floor(segments + 0.5).astype(np.int64), 0, len(source) - 1)
    index.sort(axis=1)
    last_frame = np.append(source[1:] - 1, source[-1:])  # per index: the last frame it stands for
    return np.stack([source[index[:, 0]], last_frame[index[:, 1]]], axis=1)


def predictions_table(subject: str, video: str, onsets_offsets, labels, scores) -> pd.DataFrame:
    """Rows of predictions.csv (columns subject,video,onset,offset,type,score), sorted by onset."""
    frames = np.asarray(onsets_offsets, dtype=np.int64).reshape(-1, 2)
    table = pd.DataFrame(
        {
            "subject": subject,
            "video": video,
            "onset": frames[:, 0],
            "offset": frames[:, 1],
            "type": [TYPES[label] for label in np.asarray(labels, dtype=np.int64)],
            "score": np.asarray(scores, dtype=np.float64),
        },
        columns=COLUMNS,
    )
    return table.sort_values(["onset", "offset"], kind="stable", ignore_index=True)


def postprocess_video(
    subject: str,
    video: str,
    window_outputs: Sequence[tuple[int, object, object, object]],
    source_frames: Sequence[int],
    fps: float,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.0,
    max_per_video: int | None = None,
    limits: Mapping[str, Sequence[float | None]] | None = None,
) -> pd.DataFrame:
    """A video's predictions from its windows' (start, segments, scores, labels).

    `source_frames` is meta.json's list (one dataset frame number per cached frame) and `fps`
    the source rate (meta.json "source_fps"). Keeps scores ≥ score_threshold, then at most
    `max_per_video` intervals, the best-scored.
    """
    parts = [to_video(*outputs) for outputs in window_outputs]
    segments, scores, labels = merge_windows(parts, len(source_frames))
    confident = scores >= score_threshold
    frames = to_source_frames(segments[confident], source_frames)
    scores, labels = scores[confident], labels[confident]
    if limits:
        valid = duration_filter(frames, labels, limits, fps)
        frames, scores, labels = frames[valid], scores[valid], labels[valid]
    kept = per_class_nms(frames, scores, labels, iou_threshold)[:max_per_video]
    return predictions_table(subject, video, frames[kept], labels[kept], scores[kept])


def apply_threshold(predictions: pd.DataFrame, thresholds: Mapping[str, float]) -> pd.DataFrame:
    """The predictions scored at or above their type's threshold."""
    missing = sorted(set(predictions["type"]) - set(thresholds))
    if missing:
        raise UserError(f"no score threshold for type(s) {missing}; thresholds: {dict(thresholds)}")
    limits = predictions["type"].map(thresholds).to_numpy(dtype=np.float64)
    return predictions[predictions["score"].to_numpy() >= limits].reset_index(drop=True)


def best_thresholds(
    predictions: pd.DataFrame,
    ground_truth: pd.DataFrame,
    candidates: Mapping[str, Sequence[float]] | None = None,
    videos: Iterable[tuple[str, str]] | None = None,
    iou: float = 0.5,
) -> tuple[dict[str, float], float]:
    """({type: threshold}, overall F1): one score threshold per type, jointly maximising the
    strict MEGC overall F1.

    One threshold per type because the types score on different scales: a faint ME's best score
    sits far below a MaE's, and a shared threshold set by the MaEs silences every ME. Matching is
    per video and type, so each type's TP/FP/FN are counted once per candidate and the overall F1
    of every combination is their sum. Give it validation subjects only: thresholds chosen on
    the test subject would make its score an optimistic "oracle". Default candidates per type:
    its distinct scores (MAX_CANDIDATES quantiles when there are more) and one just above its
    best score, which keeps none of the type (when its predictions only add false positives).
    `videos` as in mespot.metrics.evaluate. Ties go to the lowest thresholds, which keep the
    most predictions: when validation cannot tell thresholds apart, nothing is filtered out on
    no evidence.
    Candidates are rounded down to float32, the precision checkpoints store them in (float64
    does not exist on every device, e.g. Apple's MPS): validation scores exactly the thresholds
    that the test applies, and a candidate taken from a score still keeps that score.
    """
    evaluate(predictions, ground_truth, iou=iou, videos=videos)  # checks the inputs, warns once
    groups = _groups(predictions, ground_truth)
    thresholds, counts = {}, []
    for kind in TYPES:
        if candidates is None:
            scores = predictions.loc[predictions["type"] == kind, "score"].to_numpy()
            options = list(default_candidates(scores))
            if len(scores):  # and one above the best, keeping none of the type
                options.append(np.nextafter(_float32_floor(scores.max()), np.float32(np.inf)))
        else:
            options = candidates.get(kind, [])
        thresholds[kind] = sorted({float(_float32_floor(t)) for t in options}) or [0.0]
        counts.append(np.array([_counts(groups[kind], t, iou) for t in thresholds[kind]]))
    mae, me = counts  # (n_pred, n_gt, tp) per candidate; summed for every pair of candidates
    total = mae[:, None, :] + me[None, :, :]
    n_pred, n_gt, tp = np.moveaxis(total, -1, 0)
    f1 = np.divide(2 * tp, n_pred + n_gt, out=np.zeros(tp.shape), where=n_pred + n_gt > 0)
    best = np.unravel_index(np.argmax(f1), f1.shape)  # the first maximum: the lowest thresholds
    chosen = {kind: thresholds[kind][i] for kind, i in zip(TYPES, best, strict=True)}
    return chosen, float(f1[best])


def _float32_floor(value: float) -> np.float32:
    """The largest float32 ≤ value."""
    rounded = np.float32(value)
    return np.nextafter(rounded, np.float32(-np.inf)) if rounded > value else rounded


def _groups(predictions: pd.DataFrame, ground_truth: pd.DataFrame) -> dict[str, list[tuple]]:
    """Per type: (predicted intervals, their scores, ground-truth intervals) of every video,
    grouped once: mespot.metrics.evaluate per candidate would regroup the tables each time."""
    keys, frames = [*KEY, "type"], ["onset", "offset"]
    predicted = dict(iter(predictions.groupby(keys)))
    annotated = dict(iter(ground_truth.groupby(keys)))
    groups: dict[str, list[tuple]] = {kind: [] for kind in TYPES}
    for key in set(predicted) | set(annotated):
        p = predicted.get(key, predictions.iloc[:0])
        g = annotated.get(key, ground_truth.iloc[:0])
        scores = p["score"].to_numpy(dtype=np.float64)
        groups[key[-1]].append((p[frames].to_numpy(), scores, g[frames].to_numpy()))
    return groups


def _counts(groups: list[tuple], threshold: float, iou: float) -> tuple[int, int, int]:
    """(n_pred, n_gt, tp) of the predictions scored ≥ threshold, counted as evaluate counts."""
    n_pred = n_gt = tp = 0
    for predicted, scores, annotated in groups:
        kept = scores >= threshold
        n_pred += int(kept.sum())
        n_gt += len(annotated)
        tp += len(match(predicted[kept], annotated, scores[kept], iou=iou, matching="strict"))
    return n_pred, n_gt, tp


def default_candidates(scores: np.ndarray) -> np.ndarray:
    """The distinct scores, or MAX_CANDIDATES of them at evenly spaced quantiles."""
    distinct = np.unique(scores)
    if len(distinct) <= MAX_CANDIDATES:
        return distinct
    return np.unique(np.quantile(scores, np.linspace(0, 1, MAX_CANDIDATES), method="lower"))
