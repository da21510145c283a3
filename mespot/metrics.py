"""The MEGC spotting metric, the same for every method, so results compare across papers.

A spotted interval is a true positive for a ground-truth interval of the same type when their
inclusive-frame IoU reaches the threshold (0.5). TP/FP/FN are summed over every video, then
precision, recall and F1 are computed once per type and overall (MaE and ME counts added).

Two ways of counting:
- `strict` (default): one-to-one matching, greedy — the highest IoU first, ties by score.
- `megc2020`: the official MEGC 2020 baseline's counting — TP = ground truths hit by at least
  one prediction, FP = predictions − TP, FN = ground truths − TP. Its IoU is 0 when either
  interval has offset ≤ onset. Kept only to reproduce published numbers: one prediction can
  count as two TPs there, so FP can go negative and precision above 1.

Plain numpy and pandas, so that the commands that only score files start without torch; the
same counts as a torchmetrics Metric, summed across DDP processes: mespot/spotting_metric.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mespot.errors import UserError
from mespot.intervals import KEY, TYPE_NAMES, TYPES

log = logging.getLogger(__name__)

MATCHING = ("strict", "megc2020")
PAIR_COLUMNS = ["video", "gt_onset", "gt_offset", "pred_onset", "pred_offset", "result", "type"]


def interval_iou(pred: np.ndarray, gt: np.ndarray, matching: str = "strict") -> np.ndarray:
    """Pairwise IoU of inclusive frame intervals: (N, 2) × (M, 2) → (N, M)."""
    pred = np.asarray(pred, dtype=np.int64).reshape(-1, 2)
    gt = np.asarray(gt, dtype=np.int64).reshape(-1, 2)
    p_on, p_off = pred[:, :1], pred[:, 1:]
    g_on, g_off = gt[:, 0], gt[:, 1]
    inter = np.clip(np.minimum(p_off, g_off) - np.maximum(p_on, g_on) + 1, 0, None)
    union = (p_off - p_on + 1) + (g_off - g_on + 1) - inter
    iou = inter / np.maximum(union, 1)
    if matching == "megc2020":
        iou[p_off[:, 0] <= p_on[:, 0], :] = 0.0
        iou[:, g_off <= g_on] = 0.0
    return iou


def match(
    pred: np.ndarray,
    gt: np.ndarray,
    scores: np.ndarray | None = None,
    *,
    iou: float = 0.5,
    matching: str = "strict",
) -> list[tuple[int, int]]:
    """Matched (prediction index, ground-truth index) pairs for one video and one type.

    The number of pairs is the TP count in both modes: `strict` pairs are one-to-one;
    `megc2020` gives one pair per ground truth hit, with its best prediction (which may also be
    the best prediction of another ground truth).
    """
    check_matching(matching)
    overlaps = interval_iou(pred, gt, matching)
    n_pred, n_gt = overlaps.shape
    if n_pred == 0 or n_gt == 0:
        return []
    scores = np.zeros(n_pred) if scores is None else np.asarray(scores, dtype=float)
    if matching == "megc2020":
        pairs = []
        for j in np.flatnonzero((overlaps >= iou).any(axis=0)):
            # best IoU, then best score, then first prediction
            i = min(range(n_pred), key=lambda i: (-overlaps[i, j], -scores[i], i))
            pairs.append((int(i), int(j)))
        return pairs
    candidates = sorted(
        zip(*np.nonzero(overlaps >= iou), strict=True),
        key=lambda ij: (-overlaps[ij], -scores[ij[0]], ij[0], ij[1]),
    )
    used_pred, used_gt, pairs = set(), set(), []
    for i, j in candidates:
        if i not in used_pred and j not in used_gt:
            used_pred.add(i)
            used_gt.add(j)
            pairs.append((int(i), int(j)))
    return pairs


def check_matching(matching: str) -> None:
    if matching not in MATCHING:
        raise UserError(f"matching={matching!r} is not known; use one of {', '.join(MATCHING)}")


@dataclass(frozen=True)
class Counts:
    """Counts for one type (or both); precision, recall and F1 follow from them."""

    n_pred: int = 0
    n_gt: int = 0
    tp: int = 0

    @property
    def fp(self) -> int:
        return self.n_pred - self.tp

    @property
    def fn(self) -> int:
        return self.n_gt - self.tp

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.n_pred + other.n_pred, self.n_gt + other.n_gt, self.tp + other.tp)

    def as_dict(self) -> dict[str, float]:
        return {
            "n_pred": self.n_pred,
            "n_gt": self.n_gt,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


@dataclass
class Evaluation:
    """Counts per type under one matching rule, plus the per-pair log when it was asked for."""

    matching: str
    iou: float
    counts: dict[str, Counts] = field(default_factory=lambda: {t: Counts() for t in TYPES})
    pairs: pd.DataFrame | None = None

    @property
    def overall(self) -> Counts:
        return self.counts["mae"] + self.counts["me"]

    def to_dict(self) -> dict:
        """The metrics.json layout: the rule, then counts and F1 per type and overall."""
        out = {"matching": self.matching, "iou": self.iou}
        out.update({t: self.counts[t].as_dict() for t in TYPES})
        out["overall"] = self.overall.as_dict()
        return out

    def table(self) -> str:
        """Rows MaE, ME, Overall; a fixed-width text table for terminals and logs."""
        header = ["", "n_pred", "n_gt", "TP", "FP", "FN", "precision", "recall", "F1"]
        rows = [(TYPE_NAMES[t], self.counts[t]) for t in TYPES] + [("Overall", self.overall)]
        lines = ["{:<8}{:>8}{:>8}{:>6}{:>6}{:>6}{:>11}{:>8}{:>8}".format(*header)]
        for name, c in rows:
            lines.append(
                f"{name:<8}{c.n_pred:>8}{c.n_gt:>8}{c.tp:>6}{c.fp:>6}{c.fn:>6}"
                f"{c.precision:>11.4f}{c.recall:>8.4f}{c.f1:>8.4f}"
            )
        return "\n".join(lines)


def evaluate(
    predictions: pd.DataFrame,
    ground_truth: pd.DataFrame,
    *,
    iou: float = 0.5,
    matching: str = "strict",
    videos: Iterable[tuple[str, str]] | None = None,
    pairs: bool = False,
) -> Evaluation:
    """Score predictions (subject, video, onset, offset, type[, score]) against ground truth.

    Ground truths of videos without predictions are FN. `videos` lists the (subject, video)
    pairs that exist (e.g. from videos.csv): a prediction for any other video is an error.
    Without it, predictions for videos absent from the ground truth count as FP with a warning
    (a video with no expression has no row in intervals.csv, so it cannot be told from a typo).
    """
    check_matching(matching)
    if isinstance(iou, bool) or not isinstance(iou, (int, float)) or not 0.0 < iou <= 1.0:
        raise UserError(f"iou={iou!r} must be a number in (0, 1]")
    _check_videos(predictions, ground_truth, videos)
    counts = {t: Counts() for t in TYPES}
    log_rows: list[tuple] = []
    gt_groups = dict(iter(ground_truth.groupby(KEY + ["type"], sort=False)))
    pred_groups = dict(iter(predictions.groupby(KEY + ["type"], sort=False)))
    for key in sorted(set(gt_groups) | set(pred_groups)):
        p = pred_groups.get(key, predictions.iloc[:0])
        g = gt_groups.get(key, ground_truth.iloc[:0])
        p_iv, g_iv = p[["onset", "offset"]].to_numpy(), g[["onset", "offset"]].to_numpy()
        scores = p["score"].to_numpy() if "score" in p else None
        matched = match(p_iv, g_iv, scores, iou=iou, matching=matching)
        type_ = key[-1]
        counts[type_] += Counts(len(p_iv), len(g_iv), len(matched))
        if pairs:
            log_rows += _pair_rows(key[1], type_, p_iv, g_iv, matched)
    log_table = pd.DataFrame(log_rows, columns=PAIR_COLUMNS) if pairs else None
    return Evaluation(matching, iou, counts, log_table)


def _check_videos(predictions, ground_truth, videos) -> None:
    predicted = set(map(tuple, predictions[KEY].drop_duplicates().to_numpy()))
    if videos is not None:
        unknown = predicted - {tuple(v) for v in videos}
        if unknown:
            raise UserError(f"predictions name unknown video(s): {_names(unknown)}")
        return
    unannotated = predicted - set(map(tuple, ground_truth[KEY].drop_duplicates().to_numpy()))
    if unannotated:
        log.warning(
            "predictions for %d video(s) without ground truth, counted as false positives: %s",
            len(unannotated),
            _names(unannotated),
        )


def _names(pairs: set[tuple[str, str]], limit: int = 10) -> str:
    names = [f"{s}/{v}" for s, v in sorted(pairs)]
    more = f" … and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _pair_rows(video, type_, pred, gt, matched) -> list[tuple]:
    """MEGC log lines: one TP per match, FN per unmatched ground truth, FP per unused prediction."""
    rows = [(video, *gt[j], *pred[i], "TP", type_) for i, j in matched]
    hit_gt = {j for _, j in matched}
    used_pred = {i for i, _ in matched}
    rows += [(video, *gt[j], "-", "-", "FN", type_) for j in range(len(gt)) if j not in hit_gt]
    rows += [
        (video, "-", "-", *pred[i], "FP", type_) for i in range(len(pred)) if i not in used_pred
    ]
    return rows


def format_pairs_log(pairs: pd.DataFrame) -> str:
    """Space-separated MEGC log: `video gt_on gt_off pred_on pred_off TP|FP|FN type`."""
    return "".join(" ".join(str(v) for v in row) + "\n" for row in pairs.itertuples(index=False))
