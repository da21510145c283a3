"""The preprocessing benchmark's flow part on a tiny budget: the known motion is what OpenCV's
convention says, the figures are all there and sane, and results go only where they are told."""

import json

import cv2
import numpy as np
import pytest

from mespot.bench import common
from mespot.bench import preprocess as bench

SHIFT = (1.5, 0.0)  # px: a pure translation, the case whose answer is obvious


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    settings = bench.pick_settings(["tvl1-default", "dis-fast"])
    return bench.bench_flow(
        settings, fields=1, repeats=1, seconds=0.0, workers=2, translation=SHIFT
    )


def test_translation_truth_is_the_shift_everywhere():
    case = bench.make_cases(1, translation=(3.0, -2.0))[0]
    assert np.allclose(case.truth, (3.0, -2.0))


def test_forward_flow_inverts_the_warp():
    """warp() takes y from y - G(y); the truth F must send x to that y: x + F(x) - G(x + F(x))
    = x, to a ten-thousandth of a pixel."""
    rng = np.random.default_rng(5)
    _, face = bench.face_image(rng)
    motion = bench.random_motion(rng, face)
    truth = bench.forward_flow(motion, face.shape).astype(np.float64)
    xs, ys = bench.pixel_grid(face.shape)
    g = motion.at(xs + truth[..., 0], ys + truth[..., 1])
    assert np.abs(truth - g).max() < 1e-4
    assert np.abs(truth - motion.at(xs, ys))[face].max() > 1e-3  # the inversion did something


def test_bicubic_sampling_is_exact_on_the_grid_and_reflects_like_opencv():
    image = np.random.default_rng(0).integers(0, 256, (9, 7)).astype(np.float64)
    xs, ys = bench.pixel_grid(image.shape)
    assert np.allclose(bench.sample_bicubic(image, xs, ys), image)
    shifted = bench.sample_bicubic(image, xs - 2, ys + 3)
    expected = cv2.remap(
        image, (xs - 2).astype(np.float32), (ys + 3).astype(np.float32), cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_REFLECT101,
    )  # fmt: skip
    assert np.allclose(shifted, expected)


def test_truth_maps_prev_onto_next():
    """prev(x) ≈ next(x + truth(x)), OpenCV's convention: sampling the warped frame along the
    truth gives the original back, and moving the other way does not. (A blurred face: the
    skin's pixel-fine grain does not survive two sub-pixel resamplings.)"""
    rng = np.random.default_rng(3)
    image, face = bench.face_image(rng)
    prev = cv2.GaussianBlur(image, (0, 0), 1.5)
    motion = bench.random_motion(rng, face)
    nxt = bench.warp(prev, motion).astype(np.float64)
    truth = bench.forward_flow(motion, prev.shape)
    xs, ys = bench.pixel_grid(prev.shape)

    def back(sign: float) -> float:
        sampled = bench.sample_bicubic(nxt, xs + sign * truth[..., 0], ys + sign * truth[..., 1])
        return float(np.abs(sampled - prev)[face].mean())

    assert back(+1) < 0.5
    assert back(+1) < back(0) / 3 < back(-1) / 3


def test_rows_hold_every_figure(rows):
    keys = {"name", "method", "params", "pairs_per_s_1core", "pairs_per_s_all", "workers",
            "scaling", "epe_face", "epe_small", "epe_face_noisy", "casme2_hours_16core",
            "meets_goal"}  # fmt: skip
    assert [r["name"] for r in rows] == ["tvl1-default", "dis-fast"]
    for row in rows:
        assert keys <= row.keys()
        assert row["pairs_per_s_1core"] > 0 and row["pairs_per_s_all"] > 0
        assert row["casme2_hours_16core"] == pytest.approx(
            bench.CASME2_FRAMES / (row["pairs_per_s_1core"] * 16) / 3600
        )


def test_tvl1_defaults_recover_a_known_translation(rows):
    tvl1 = rows[0]
    assert tvl1["epe_face"] < 0.5
    assert tvl1["epe_face_noisy"] < 0.5


def test_verdict_names_a_tvl1_setting_only_when_one_meets_the_goal(rows):
    verdict = bench.verdict(rows)
    assert verdict["baseline_epe_face"] == rows[0]["epe_face"]
    assert set(verdict["meeting_goal"]) == {r["name"] for r in rows if r["meets_goal"]}
    if rows[0]["meets_goal"]:
        assert verdict["recommended_tvl1"]["name"] == "tvl1-default"
    else:
        assert verdict["recommended_tvl1"] is None


def test_results_are_written_only_where_told(rows, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "git_commit", lambda: "abc1234")
    result = {
        "command": "python -m mespot.bench.preprocess --test",
        "quick": True,
        "environment": common.environment("cv2", "numpy"),
        "flow": {"fields": 1, "noise": bench.SENSOR_NOISE, "workers": 2, "size": 128, "rows": rows},
        "verdict": bench.verdict(rows),
        "pipeline_skipped": "not run in tests",
    }
    json_path, md_path = common.write_report(result, tmp_path, "preprocess", bench.markdown)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preprocess.json", "preprocess.md"]
    saved = json.loads(json_path.read_text())
    assert saved["environment"]["commit"] == "abc1234"
    assert saved["environment"]["cv2"] == cv2.__version__
    text = md_path.read_text()
    assert "| tvl1-default | OpenCV defaults |" in text
    assert result["command"] in text


def test_pipeline_summary_is_parsed():
    stdout = (
        "cache: /tmp/cache/casme2-7c771533414c\n"
        "videos: 4 done, 0 skipped (already cached), 0 failed; 2400 frames in 26.5 s "
        "(90.4 frames/s)\n"
    )
    assert bench.parse_summary(stdout) == {"frames": 2400, "seconds": 26.5, "frames_per_s": 90.4}
    assert bench.parse_summary("no summary")["frames_per_s"] is None
