"""Post-processing: window merging, NMS, duration filters, frame numbering, threshold choice."""

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mespot.errors import UserError
from mespot.intervals import read_intervals
from mespot.metrics import evaluate, interval_iou
from mespot.postprocess import (
    COLUMNS,
    apply_threshold,
    best_thresholds,
    default_candidates,
    duration_filter,
    merge_windows,
    nms_1d,
    per_class_nms,
    postprocess_video,
    predictions_table,
    to_source_frames,
    to_video,
)

MAE, ME = 0, 1
SAMM_LIKE = [1, 8, 14, 21, 28, 34, 41]  # 200 fps kept at 30 fps


# --- IoU and NMS ---------------------------------------------------------------------------------


def test_nms_keeps_the_highest_of_overlapping_intervals():
    segments = np.array([[10, 20], [11, 21], [40, 50]])
    kept = nms_1d(segments, np.array([0.5, 0.9, 0.3]), iou_threshold=0.5)
    assert kept.tolist() == [1, 2]  # highest score first


def test_nms_keeps_an_overlap_exactly_at_the_threshold():
    segments = np.array([[1, 10], [6, 15]])  # IoU 5/15 = 1/3
    assert nms_1d(segments, np.array([0.9, 0.8]), iou_threshold=1 / 3).tolist() == [0, 1]
    assert nms_1d(segments, np.array([0.9, 0.8]), iou_threshold=0.33).tolist() == [0]


def test_nms_with_threshold_one_suppresses_nothing_and_equal_scores_keep_index_order():
    segments = np.array([[1, 10], [1, 10]])
    assert nms_1d(segments, np.array([0.5, 0.5]), iou_threshold=1.0).tolist() == [0, 1]
    assert nms_1d(segments, np.array([0.5, 0.5]), iou_threshold=0.5).tolist() == [0]


def test_nms_of_nothing_is_nothing():
    assert nms_1d(np.empty((0, 2)), np.empty(0), 0.5).tolist() == []
    assert per_class_nms(np.empty((0, 2)), np.empty(0), np.empty(0, int), 0.5).tolist() == []


def test_nms_rejects_a_threshold_outside_zero_one():
    with pytest.raises(UserError, match="iou_threshold"):
        nms_1d(np.array([[1, 2]]), np.array([1.0]), 1.5)


def test_per_class_nms_keeps_overlapping_intervals_of_different_classes():
    segments = np.array([[10, 20], [10, 20], [11, 20]])
    kept = per_class_nms(segments, np.array([0.6, 0.7, 0.9]), np.array([MAE, ME, MAE]), 0.5)
    assert kept.tolist() == [2, 1]  # the best MaE and the ME, highest score first


@st.composite
def candidates(draw):
    n = draw(st.integers(0, 25))
    onsets = draw(st.lists(st.integers(0, 100), min_size=n, max_size=n))
    lengths = draw(st.lists(st.integers(0, 30), min_size=n, max_size=n))
    scores = draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
    labels = draw(st.lists(st.sampled_from([MAE, ME]), min_size=n, max_size=n))
    segments = np.stack([onsets, np.add(onsets, lengths)], axis=1).reshape(-1, 2)
    return segments, np.array(scores), np.array(labels, dtype=int)


@settings(max_examples=200, deadline=None)
@given(candidates(), st.floats(0, 1))
def test_per_class_nms_never_keeps_two_same_class_intervals_above_the_threshold(case, threshold):
    segments, scores, labels = case
    kept = per_class_nms(segments, scores, labels, threshold)
    assert len(set(kept.tolist())) == len(kept)
    if len(scores):
        assert scores[kept[0]] == scores.max()  # the best candidate always survives
    for k, i in enumerate(kept):
        others = kept[k + 1 :][labels[kept[k + 1 :]] == labels[i]]
        assert (interval_iou(segments[i : i + 1], segments[others])[0] <= threshold).all()


# --- windows -------------------------------------------------------------------------------------


def test_to_video_adds_the_window_start_and_accepts_tensors():
    segments, scores, labels = to_video(
        32, torch.tensor([[0.0, 5.5], [10.0, 12.0]]), torch.tensor([0.9, 0.1]), torch.tensor([1, 0])
    )
    np.testing.assert_allclose(segments, [[32.0, 37.5], [42.0, 44.0]])
    np.testing.assert_allclose(scores, [0.9, 0.1])
    assert labels.tolist() == [ME, MAE]
    segments, _, _ = to_video(0, np.array([[1, 2]]), np.array([0.5]), np.array([0]))
    assert segments.tolist() == [[1.0, 2.0]]


def test_two_overlapping_windows_predicting_one_expression_give_one_interval():
    # window length 64, stride 32: frames 40..50 are in both windows
    first = to_video(0, np.array([[40.2, 50.1]]), np.array([0.7]), np.array([ME]))
    second = to_video(32, np.array([[8.0, 18.3]]), np.array([0.8]), np.array([ME]))
    segments, scores, labels = merge_windows([first, second], n_frames=100)
    assert len(segments) == 2
    kept = per_class_nms(segments, scores, labels, 0.5)
    assert kept.tolist() == [1]
    np.testing.assert_allclose(segments[kept], [[40.0, 50.3]])


def test_merge_clips_to_the_video_and_drops_candidates_wholly_outside():
    outside, partly, padding = [-95.0, -92.0], [5.0, 20.0], [12.0, 15.0]
    part = to_video(90, np.array([outside, partly, padding]), np.ones(3), np.zeros(3))
    segments, scores, labels = merge_windows([part], n_frames=100)
    assert segments.tolist() == [[95.0, 99.0]]
    assert len(scores) == len(labels) == 1


def test_merge_of_no_windows_is_empty():
    segments, scores, labels = merge_windows([], n_frames=10)
    assert segments.shape == (0, 2) and scores.shape == (0,) and labels.shape == (0,)


# --- frame numbers -------------------------------------------------------------------------------


def test_source_frames_without_resampling_shift_the_numbering():
    segments = np.array([[2.0, 5.0], [0.4, 0.6]])
    one_based = to_source_frames(segments, list(range(1, 11)))
    assert one_based.tolist() == [[3, 6], [1, 2]]
    zero_based = to_source_frames(segments, list(range(10)))
    assert zero_based.tolist() == [[2, 5], [0, 1]]
    assert one_based.dtype == np.int64


def test_source_frames_of_a_resampled_video_reach_the_next_kept_frame():
    frames = to_source_frames(np.array([[1.0, 2.0], [0.0, 0.0], [5.2, 6.4]]), SAMM_LIKE)
    assert frames.tolist() == [[8, 20], [1, 7], [34, 41]]  # the last index ends the video


def test_source_frames_clip_to_the_video_and_keep_onset_before_offset():
    frames = to_source_frames(np.array([[-3.0, 2.0], [5.0, 40.0], [3.0, 1.0]]), SAMM_LIKE)
    assert frames.tolist() == [[1, 20], [34, 41], [8, 27]]
    assert (frames[:, 0] <= frames[:, 1]).all()
    assert to_source_frames(np.empty((0, 2)), SAMM_LIKE).shape == (0, 2)


# --- duration filter -----------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [30, 200])
def test_duration_limits_are_seconds_at_any_frame_rate(fps):
    half_second = fps // 2  # frames in 0.5 s
    segments = np.array(
        [
            [1, half_second],  # ME of 0.5 s: kept
            [1, half_second + 1],  # ME just over 0.5 s: dropped
            [1, half_second + 1],  # MaE of the same length: kept
            [1, 2],  # MaE shorter than 0.2 s: dropped
        ]
    )
    labels = np.array([ME, ME, MAE, MAE])
    keep = duration_filter(segments, labels, {"me": (None, 0.5), "mae": (0.2, None)}, fps)
    assert keep.tolist() == [True, False, True, False]


def test_duration_filter_without_limits_keeps_all_and_names_unknown_types():
    segments, labels = np.array([[1, 1000]]), np.array([ME])
    assert duration_filter(segments, labels, {}, 30).tolist() == [True]
    with pytest.raises(UserError, match="micro"):
        duration_filter(segments, labels, {"micro": (None, 0.5)}, 30)


# --- tables --------------------------------------------------------------------------------------


def test_predictions_table_has_the_contract_columns_and_reads_back(tmp_path):
    table = predictions_table(
        "006", "006_1", np.array([[50, 60], [10, 20]]), np.array([ME, MAE]), np.array([0.3, 0.9])
    )
    assert (
        list(table.columns) == COLUMNS == ["subject", "video", "onset", "offset", "type", "score"]
    )
    assert table["onset"].tolist() == [10, 50]
    assert table["type"].tolist() == ["mae", "me"]
    path = tmp_path / "predictions.csv"
    table.to_csv(path, index=False)
    pd.testing.assert_frame_equal(read_intervals(path, scored=True), table)


def test_empty_predictions_table_keeps_the_columns():
    table = predictions_table("s1", "v1", np.empty((0, 2)), np.empty(0), np.empty(0))
    assert list(table.columns) == COLUMNS and table.empty


def test_postprocess_video_from_window_outputs_to_source_frames():
    windows = [
        (0, np.array([[1.0, 2.0], [0.0, 5.0]]), np.array([0.9, 0.05]), np.array([ME, MAE])),
        (2, np.array([[-1.1, 0.2], [2.0, 3.0]]), np.array([0.6, 0.4]), np.array([ME, MAE])),
    ]
    table = postprocess_video("006", "006_1", windows, SAMM_LIKE, fps=200, score_threshold=0.1)
    assert table.to_dict("list") == {
        "subject": ["006"] * 2,
        "video": ["006_1"] * 2,
        "onset": [8, 28],
        "offset": [20, 40],
        "type": ["me", "mae"],
        "score": [0.9, 0.4],
    }


def test_postprocess_video_caps_and_filters_durations():
    windows = [
        (0, np.array([[0.0, 0.0], [2.0, 6.0], [4.0, 4.0]]), np.array([0.2, 0.5, 0.9]), [1, 1, 1])
    ]
    capped = postprocess_video("s", "v", windows, SAMM_LIKE, fps=200, max_per_video=2)
    assert capped["score"].tolist() == [0.5, 0.9]
    short = postprocess_video("s", "v", windows, SAMM_LIKE, fps=200, limits={"me": (None, 0.1)})
    assert short["onset"].tolist() == [1, 28]  # 14..41 is 28 frames = 0.14 s


def test_postprocess_video_without_outputs_is_an_empty_table():
    table = postprocess_video("s", "v", [], [1, 2, 3], fps=30)
    assert list(table.columns) == COLUMNS and table.empty


# --- threshold selection -------------------------------------------------------------------------


def scored(*rows):
    return pd.DataFrame([("s1", "v1", *row) for row in rows], columns=COLUMNS)


GROUND_TRUTH = pd.DataFrame(
    [("s1", "v1", 10, 20, "mae"), ("s1", "v1", 50, 60, "mae")],
    columns=["subject", "video", "onset", "offset", "type"],
)


def test_best_thresholds_maximise_overall_f1():
    predictions = scored(
        (10, 20, "mae", 0.9),  # TP
        (30, 40, "mae", 0.8),  # FP
        (50, 60, "mae", 0.6),  # TP
        (70, 80, "mae", 0.3),  # FP
        (90, 95, "me", 0.2),  # FP: the ME threshold goes just above it, keeping no ME
    )
    # MaE alone, F1 at 0.9: 2/3, 0.8: 1/2, 0.6: 4/5, 0.3: 2/3; the ME only adds a false positive
    thresholds, f1 = best_thresholds(predictions, GROUND_TRUTH)
    assert thresholds["mae"] == pytest.approx(0.6) and f1 == pytest.approx(0.8)
    assert 0.2 < thresholds["me"] == pytest.approx(0.2)  # just above the only ME's score
    assert len(apply_threshold(predictions, thresholds)) == 3  # the MaEs at 0.9, 0.8 and 0.6
    assert best_thresholds(predictions, GROUND_TRUTH, {"mae": [0.85, 0.7], "me": [0.1]}) == (
        pytest.approx({"mae": 0.85, "me": 0.1}),
        pytest.approx(1 / 2),
    )


def test_each_type_gets_its_own_threshold():
    truth = pd.concat([GROUND_TRUTH, scored((100, 106, "me", 1.0)).drop(columns="score")])
    predictions = scored(
        (10, 20, "mae", 0.9),  # TP
        (50, 60, "mae", 0.8),  # TP
        (70, 80, "mae", 0.5),  # FP
        (100, 106, "me", 0.3),  # TP: a faint ME scores below every MaE
        (120, 126, "me", 0.1),  # FP
    )
    thresholds, f1 = best_thresholds(predictions, truth)
    assert thresholds == pytest.approx({"mae": 0.8, "me": 0.3}) and f1 == 1.0
    # one shared threshold could not have it: at 0.3 the MaE FP stays, at 0.8 the ME is lost
    for shared in (0.3, 0.8):
        kept = apply_threshold(predictions, {"mae": shared, "me": shared})
        assert evaluate(kept, truth).overall.f1 < 1.0


def test_thresholds_are_float32_values_that_keep_the_score_they_came_from():
    truth = scored((100, 106, "me", 1.0)).drop(columns="score")
    predictions = scored((100, 106, "me", 0.1), (120, 126, "me", 0.05))  # 0.1: no float32
    thresholds, f1 = best_thresholds(predictions, truth)
    assert f1 == 1.0 and thresholds["me"] <= 0.1
    assert all(float(np.float32(t)) == t for t in thresholds.values())  # a buffer holds them
    buffer = torch.tensor([thresholds["mae"], thresholds["me"]])  # float32, as a module holds it
    stored = {"mae": float(buffer[0]), "me": float(buffer[1])}
    assert len(apply_threshold(predictions, stored)) == 1


def test_best_thresholds_ties_go_to_the_lowest_threshold():
    predictions = scored(
        (10, 20, "mae", 0.9),  # TP
        (30, 40, "mae", 0.5),  # FP
        (70, 80, "mae", 0.4),  # FP
        (50, 60, "mae", 0.3),  # TP
    )
    # F1 at 0.9: 2/3, 0.5: 1/2, 0.4: 2/5, 0.3: 4/6; no ME predictions: nothing to filter
    assert best_thresholds(predictions, GROUND_TRUTH) == (
        pytest.approx({"mae": 0.3, "me": 0.0}),
        pytest.approx(2 / 3),
    )


def test_best_thresholds_without_predictions():
    assert best_thresholds(scored(), GROUND_TRUTH) == ({"mae": 0.0, "me": 0.0}, 0.0)


def test_best_thresholds_check_the_given_videos():
    with pytest.raises(UserError, match="unknown video"):
        best_thresholds(scored((10, 20, "mae", 0.9)), GROUND_TRUTH, videos=[("s1", "v2")])


def test_apply_threshold_names_a_type_without_threshold():
    with pytest.raises(UserError, match=r"no score threshold for type\(s\) \['me'\]"):
        apply_threshold(scored((10, 20, "me", 0.9)), {"mae": 0.5})


def test_best_thresholds_score_as_evaluate_does():
    rng = np.random.default_rng(1)
    onsets = rng.integers(1, 300, size=200)
    predictions = pd.DataFrame(
        {
            "subject": "s1",
            "video": rng.choice(["v1", "v2", "v3"], size=200),
            "onset": onsets,
            "offset": onsets + rng.integers(0, 30, size=200),
            "type": rng.choice(["mae", "me"], size=200),
            "score": rng.random(200).round(2),
        }
    )
    ground_truth = predictions.sample(40, random_state=1).drop(columns="score")
    ground_truth = ground_truth[ground_truth["video"] != "v3"]  # v3: predictions only
    for mae, me in ((0.0, 0.5), (0.3, 0.3), (0.77, 0.1), (0.99, 0.0)):
        chosen, f1 = best_thresholds(predictions, ground_truth, {"mae": [mae], "me": [me]})
        assert chosen == pytest.approx({"mae": mae, "me": me})
        assert f1 == evaluate(apply_threshold(predictions, chosen), ground_truth).overall.f1


def test_best_thresholds_warn_once_about_unannotated_videos(caplog):
    predictions = scored((10, 20, "mae", 0.9), (30, 40, "mae", 0.5))
    predictions.loc[1, "video"] = "v9"
    best_thresholds(predictions, GROUND_TRUTH)
    assert sum("without ground truth" in r.message for r in caplog.records) == 1


def test_default_candidates_are_real_scores_and_few():
    scores = np.random.default_rng(0).random(5000)
    candidates = default_candidates(scores)
    assert 2 <= len(candidates) <= 100
    assert np.isin(candidates, scores).all()
    assert candidates[0] == scores.min() and candidates[-1] == scores.max()
    assert default_candidates(np.array([0.5, 0.1, 0.5])).tolist() == [0.1, 0.5]
