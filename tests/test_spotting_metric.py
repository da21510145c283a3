"""The torchmetrics Metric equals the function API: on random cases, and summed across processes."""

import numpy as np
import pandas as pd
import pytest
from conftest import on_two_gloo_ranks
from hypothesis import given, settings
from hypothesis import strategies as st

from mespot.intervals import KEY
from mespot.metrics import evaluate, interval_iou, match
from mespot.spotting_metric import SpottingMetric

interval = st.tuples(
    st.sampled_from(["v1", "v2", "v3"]),
    st.integers(0, 60),
    st.integers(0, 25),
    st.sampled_from(["mae", "me"]),
    st.sampled_from([0.1, 0.5, 0.9]),
).map(lambda r: (r[0], r[1], r[1] + r[2], r[3], r[4]))

cases = st.tuples(st.lists(interval, max_size=25), st.lists(interval, max_size=15))


def frame(rows):
    df = pd.DataFrame(rows, columns=["video", "onset", "offset", "type", "score"])
    df.insert(0, "subject", "s1")
    return df


ALL_VIDEOS = [("s1", "v1"), ("s1", "v2"), ("s1", "v3")]


def in_video(df, key):
    return df[(df["subject"] == key[0]) & (df["video"] == key[1])]


@settings(max_examples=150, deadline=None)
@given(cases, st.sampled_from(["strict", "megc2020"]), st.sampled_from([0.3, 0.5, 0.7]))
def test_metric_updated_video_by_video_equals_evaluate(case, matching, iou):
    pred, gt = frame(case[0]), frame(case[1]).drop(columns="score")
    expected = evaluate(pred, gt, iou=iou, matching=matching, videos=ALL_VIDEOS)

    metric = SpottingMetric(iou=iou, matching=matching)
    for key in ALL_VIDEOS:
        metric.update(in_video(pred, key), in_video(gt, key), videos=ALL_VIDEOS)
    assert metric.evaluation().counts == expected.counts
    values = metric.compute()
    for name, counts in dict(expected.counts, overall=expected.overall).items():
        for stat in ("precision", "recall", "f1"):
            assert values[f"{name}_{stat}"].item() == pytest.approx(getattr(counts, stat))


@settings(max_examples=200, deadline=None)
@given(cases, st.sampled_from([0.3, 0.5, 0.7]))
def test_strict_matching_is_one_to_one_and_maximal(case, iou):
    pred = np.array([[r[1], r[2]] for r in case[0]]).reshape(-1, 2)
    gt = np.array([[r[1], r[2]] for r in case[1]]).reshape(-1, 2)
    scores = np.array([r[4] for r in case[0]])
    pairs = match(pred, gt, scores, iou=iou)
    overlaps = interval_iou(pred, gt)
    used_pred, used_gt = {i for i, _ in pairs}, {j for _, j in pairs}
    assert len(used_pred) == len(used_gt) == len(pairs)
    assert all(overlaps[i, j] >= iou for i, j in pairs)
    # greedy leaves no unmatched prediction / ground-truth pair that would still qualify
    assert not any(
        overlaps[i, j] >= iou
        for i in range(len(pred))
        for j in range(len(gt))
        if i not in used_pred and j not in used_gt
    )
    # the official counting hits at least as many ground truths when no interval is one frame
    if (pred[:, 1] > pred[:, 0]).all() and (gt[:, 1] > gt[:, 0]).all():
        assert len(pairs) <= len(match(pred, gt, scores, iou=iou, matching="megc2020"))


def _metric_on_rank(rank, world, pred, gt):
    metric = SpottingMetric()
    mine = ALL_VIDEOS[rank::world]  # each process sees its own videos, as under DDP
    pick = lambda df: df[[tuple(k) in mine for k in df[KEY].to_numpy()]]  # noqa: E731
    metric.update(pick(pred), pick(gt), videos=ALL_VIDEOS)
    result = metric.evaluation()
    return {t: (c.n_pred, c.n_gt, c.tp) for t, c in result.counts.items()}


def test_counts_are_summed_across_ddp_processes():
    rng = np.random.default_rng(3)
    rows = lambda n: [  # noqa: E731
        (f"v{rng.integers(1, 4)}", int(s), int(s + rng.integers(3, 20)), t, 0.5)
        for s, t in zip(rng.integers(0, 200, n), rng.choice(["mae", "me"], n), strict=True)
    ]
    gt_rows = rows(12)
    pred = frame(rows(10) + [(v, s + 1, e, t, 0.5) for v, s, e, t, _ in gt_rows[:8]])
    gt = frame(gt_rows).drop(columns="score")
    expected = evaluate(pred, gt, videos=ALL_VIDEOS).counts
    assert sum(c.tp for c in expected.values()) > 0

    results = on_two_gloo_ranks(_metric_on_rank, pred, gt)
    for rank in (0, 1):
        assert results[rank] == {t: (c.n_pred, c.n_gt, c.tp) for t, c in expected.items()}
