"""The MEGC metric on hand-computed cases, in both matching modes."""

import logging
import math

import numpy as np
import pandas as pd
import pytest

from mespot.errors import UserError
from mespot.metrics import Counts, evaluate, format_pairs_log, interval_iou, match


def table(*rows, scored=False):
    """Rows (video, onset, offset, type[, score]) of subject 's1' as an interval table."""
    columns = ["video", "onset", "offset", "type"] + (["score"] if scored else [])
    df = pd.DataFrame(list(rows), columns=columns)
    df.insert(0, "subject", "s1")
    return df


NO_PREDICTIONS = table(scored=True)


# --- IoU -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((1, 10), (1, 10), 1.0),
        ((1, 10), (6, 15), 5 / 15),  # frames 6..10 shared, 1..15 covered
        ((1, 10), (10, 19), 1 / 19),  # one shared frame counts: frames are inclusive
        ((1, 10), (11, 20), 0.0),
        ((1, 10), (1, 5), 0.5),
        ((5, 5), (5, 5), 1.0),
        ((5, 5), (5, 6), 0.5),
    ],
)
def test_iou_counts_inclusive_frames(a, b, expected):
    assert interval_iou(np.array([a]), np.array([b]))[0, 0] == pytest.approx(expected)
    assert interval_iou(np.array([b]), np.array([a]))[0, 0] == pytest.approx(expected)


def test_megc2020_iou_is_zero_when_offset_not_after_onset():
    pred = np.array([[5, 5], [1, 10]])
    gt = np.array([[5, 5], [1, 10], [5, 6]])
    strict = interval_iou(pred, gt)
    quirk = interval_iou(pred, gt, "megc2020")
    assert strict[0, 0] == 1.0 and quirk[0, 0] == 0.0  # one-frame prediction and ground truth
    assert strict[0, 2] == 0.5 and quirk[0, 2] == 0.0  # one-frame prediction
    assert strict[1, 0] == 0.1 and quirk[1, 0] == 0.0  # one-frame ground truth
    assert quirk[1, 1] == strict[1, 1] == 1.0


# --- matching ------------------------------------------------------------------------------------


def test_iou_of_exactly_half_is_a_true_positive():
    gt = table(("v1", 1, 5, "mae"))
    hit = evaluate(table(("v1", 1, 10, "mae")), gt)  # 5 shared / 10 covered = 0.5
    miss = evaluate(table(("v1", 1, 11, "mae")), gt)  # 5 / 11 < 0.5
    assert hit.counts["mae"] == Counts(n_pred=1, n_gt=1, tp=1)
    assert miss.counts["mae"] == Counts(n_pred=1, n_gt=1, tp=0)


def test_one_frame_intervals_match_in_strict_mode_only():
    pred, gt = table(("v1", 7, 7, "me")), table(("v1", 7, 7, "me"))
    assert evaluate(pred, gt).counts["me"].tp == 1
    assert evaluate(pred, gt, matching="megc2020").counts["me"].tp == 0


def test_overlapping_ground_truths_are_counted_differently_by_the_two_modes():
    # One prediction hits both ground truths (IoU 1.0 and 8/12); a second one hits nothing.
    gt = table(("v1", 1, 10, "mae"), ("v1", 3, 12, "mae"))
    pred = table(("v1", 1, 10, "mae"), ("v1", 20, 30, "mae"))

    strict = evaluate(pred, gt).counts["mae"]
    assert (strict.tp, strict.fp, strict.fn) == (1, 1, 1)
    assert strict.f1 == pytest.approx(2 / 4)

    megc = evaluate(pred, gt, matching="megc2020").counts["mae"]
    assert (megc.tp, megc.fp, megc.fn) == (2, 0, 0)
    assert megc.f1 == 1.0


def test_megc2020_counts_one_prediction_twice_and_fp_goes_negative():
    """The official counting's quirk, reproduced on purpose: TP counts ground truths hit."""
    gt = table(("v1", 1, 10, "mae"), ("v1", 2, 10, "mae"))
    megc = evaluate(table(("v1", 1, 10, "mae")), gt, matching="megc2020").counts["mae"]
    assert (megc.n_pred, megc.tp, megc.fp, megc.fn) == (1, 2, -1, 0)
    assert megc.precision == 2.0


def test_strict_matching_takes_the_highest_iou_first():
    # g0 has IoU 10/12 with the prediction, g1 has IoU 1: the prediction goes to g1.
    pairs = match(np.array([[1, 10]]), np.array([[1, 12], [1, 10]]))
    assert pairs == [(0, 1)]


def test_strict_matching_breaks_iou_ties_by_score():
    pred = np.array([[1, 10], [1, 10]])
    assert match(pred, np.array([[1, 10]]), scores=np.array([0.2, 0.9])) == [(1, 0)]
    assert match(pred, np.array([[1, 10]]), scores=np.array([0.9, 0.2])) == [(0, 0)]


def test_two_predictions_on_one_ground_truth_give_one_tp_and_one_fp_in_both_modes():
    gt = table(("v1", 1, 10, "me"))
    pred = table(("v1", 1, 10, "me"), ("v1", 2, 10, "me"))
    for matching in ("strict", "megc2020"):
        c = evaluate(pred, gt, matching=matching).counts["me"]
        assert (c.tp, c.fp, c.fn) == (1, 1, 0)


def test_prediction_of_the_other_type_is_a_false_positive():
    result = evaluate(table(("v1", 1, 10, "me")), table(("v1", 1, 10, "mae")))
    assert result.counts["mae"] == Counts(n_pred=0, n_gt=1, tp=0)
    assert result.counts["me"] == Counts(n_pred=1, n_gt=0, tp=0)
    assert (result.overall.tp, result.overall.fp, result.overall.fn) == (0, 1, 1)


def test_predictions_in_another_video_do_not_match():
    result = evaluate(table(("v2", 1, 10, "mae")), table(("v1", 1, 10, "mae")))
    assert (result.overall.tp, result.overall.fp, result.overall.fn) == (0, 1, 1)


def test_empty_predictions_give_zero_scores_not_nan():
    result = evaluate(NO_PREDICTIONS, table(("v1", 1, 10, "mae"), ("v2", 1, 5, "me")))
    for counts in (*result.counts.values(), result.overall):
        assert counts.fn == counts.n_gt and counts.tp == 0
        assert (counts.precision, counts.recall, counts.f1) == (0.0, 0.0, 0.0)


def test_nothing_at_all_gives_zeros():
    result = evaluate(NO_PREDICTIONS, table())
    d = result.to_dict()
    assert all(d[k]["f1"] == 0.0 and not math.isnan(d[k]["precision"]) for k in ("mae", "me"))
    assert d["overall"] == Counts().as_dict()


def test_video_without_ground_truth_counts_predictions_as_false_positives(caplog):
    gt = table(("v1", 1, 10, "mae"))
    pred = table(("v1", 1, 10, "mae"), ("v2", 40, 50, "mae"))
    known = [("s1", "v1"), ("s1", "v2")]  # v2 is in videos.csv but has no expression
    with caplog.at_level(logging.WARNING):
        listed = evaluate(pred, gt, videos=known)
    assert caplog.records == []
    assert (listed.overall.tp, listed.overall.fp, listed.overall.fn) == (1, 1, 0)

    with caplog.at_level(logging.WARNING):
        unlisted = evaluate(pred, gt)
    assert unlisted.counts == listed.counts
    assert "s1/v2" in caplog.text


def test_prediction_for_a_video_not_in_the_video_list_is_an_error():
    with pytest.raises(UserError, match="unknown video.*s1/v9"):
        evaluate(table(("v9", 1, 10, "mae")), table(("v1", 1, 10, "mae")), videos=[("s1", "v1")])


def test_counts_are_summed_over_videos_before_f1():
    gt = table(("v1", 1, 10, "mae"), ("v2", 1, 10, "mae"))
    pred = table(("v1", 1, 10, "mae"), *[("v2", s, s + 5, "mae") for s in (30, 50, 70)])
    c = evaluate(pred, gt).counts["mae"]
    assert (c.tp, c.fp, c.fn) == (1, 3, 1)
    assert c.f1 == pytest.approx(2 / 6)  # the mean of per-video F1 would be 0.5


def test_overall_adds_the_counts_of_both_types():
    gt = table(("v1", 1, 30, "mae"), ("v1", 50, 60, "me"), ("v1", 80, 90, "me"))
    pred = table(("v1", 1, 30, "mae"), ("v1", 50, 60, "me"), ("v1", 200, 210, "me"))
    result = evaluate(pred, gt)
    assert result.overall == Counts(n_pred=3, n_gt=3, tp=2)
    assert result.to_dict()["overall"]["f1"] == pytest.approx(4 / 6)


def test_metrics_json_layout():
    d = evaluate(table(("v1", 1, 10, "mae")), table(("v1", 1, 10, "mae")), iou=0.3).to_dict()
    assert d["matching"] == "strict" and d["iou"] == 0.3
    keys = ["n_pred", "n_gt", "tp", "fp", "fn", "precision", "recall", "f1"]
    assert all(list(d[k]) == keys for k in ("mae", "me", "overall"))


def test_iou_threshold_is_a_setting():
    pred, gt = table(("v1", 1, 10, "mae")), table(("v1", 6, 15, "mae"))  # IoU 1/3
    assert evaluate(pred, gt).overall.tp == 0
    assert evaluate(pred, gt, iou=0.3).overall.tp == 1


@pytest.mark.parametrize("bad", [{"matching": "loose"}, {"iou": 0.0}, {"iou": 1.5}, {"iou": "x"}])
def test_bad_settings_are_user_errors(bad):
    with pytest.raises(UserError):
        evaluate(NO_PREDICTIONS, table(), **bad)


def test_pairs_log_in_megc_format():
    gt = table(("v1", 1, 10, "mae"), ("v1", 50, 60, "mae"))
    pred = table(("v1", 2, 10, "mae", 0.9), ("v1", 100, 120, "mae", 0.5), scored=True)
    result = evaluate(pred, gt, pairs=True)
    assert format_pairs_log(result.pairs).splitlines() == [
        "v1 1 10 2 10 TP mae",
        "v1 50 60 - - FN mae",
        "v1 - - 100 120 FP mae",
    ]


# --- published counting --------------------------------------------------------------------------

# The MEGC 2020 baseline's published counts (DATASETS.md): (predictions, TP, ground truths) and F1.
PUBLISHED = {
    "CAS(ME)2": {"me": (5035, 21, 57, 0.0082), "mae": (1523, 109, 300, 0.1196), "overall": 0.0376},
    "SAMM-LV": {"me": (1436, 29, 159, 0.0364), "mae": (356, 22, 343, 0.0629), "overall": 0.0445},
}


def baseline_like(counts: dict, seed: int = 0):
    """Ground truth and predictions that the official counting scores as published.

    Each hit ground truth gets one to three jittered predictions (the extras are false
    positives), the remaining predictions fall far from any expression.
    """
    rng = np.random.default_rng(seed)
    gt_rows, pred_rows = [], []
    for type_, base in (("me", 0), ("mae", 1_000_000)):
        n_pred, tp, n_gt, _ = counts[type_]
        length = 15 if type_ == "me" else 40
        for k in range(n_gt):
            video, s = f"v{k % 7}", base + 1000 * k
            gt_rows.append((video, s, s + length, type_))
            if k < tp:
                for _ in range(1 + k % 3):
                    shift = int(rng.integers(-2, 3))
                    pred_rows.append((video, s + shift, s + length + shift, type_))
        n_hits = sum(1 for row in pred_rows if row[3] == type_)
        for m in range(n_pred - n_hits):
            s = base + 500_000 + 100 * m
            pred_rows.append((f"v{m % 7}", s, s + length, type_))
    return table(*pred_rows), table(*gt_rows)


@pytest.mark.parametrize("dataset", PUBLISHED)
def test_megc2020_mode_reproduces_published_baseline_counts(dataset):
    published = PUBLISHED[dataset]
    pred, gt = baseline_like(published)
    result = evaluate(pred, gt, matching="megc2020")
    for type_ in ("me", "mae"):
        n_pred, tp, n_gt, f1 = published[type_]
        c = result.counts[type_]
        assert (c.n_pred, c.tp, c.n_gt) == (n_pred, tp, n_gt)
        assert (c.fp, c.fn) == (n_pred - tp, n_gt - tp)
        assert f"{c.f1:.4f}" == f"{f1:.4f}"
    assert f"{result.overall.f1:.4f}" == f"{published['overall']:.4f}"
    # The same predictions counted one-to-one lose the duplicate hits: strict TP ≤ official TP.
    assert evaluate(pred, gt).overall.tp <= result.overall.tp
