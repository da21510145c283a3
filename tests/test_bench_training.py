"""The training benchmark's throughput part on a tiny budget: every figure is there and sane, a
step over the limit is timed on the short window, and nothing is written anywhere."""

import pytest
import torch

from mespot.bench import training as bench
from mespot.bench.common import DEFAULT_OUT

TINY = bench.Variant("vovnet_small", "cpu", px=32, window=8, batch=1)
CPU = torch.device("cpu")


def snapshot(folder) -> dict:
    """Every file under `folder` with its size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def run() -> tuple[list[dict], bool]:
    """The rows, and whether experiments/bench stayed as it was."""
    before = snapshot(DEFAULT_OUT) if DEFAULT_OUT.exists() else {}
    rows = bench.bench_throughput([TINY], device=CPU, timing={"cpu": {"warmup": 0, "steps": 1}})
    after = snapshot(DEFAULT_OUT) if DEFAULT_OUT.exists() else {}
    return rows, before == after


def test_rows_hold_every_figure(run):
    (row,), _ = run
    keys = {"config", "scale", "px", "window", "batch", "backbone", "neck", "in_chans",
            "params_backbone", "params_neck_head", "params_total", "full_step_seconds_estimate",
            "train_window", "train_steps", "train_seconds_per_step", "train_frames_per_s",
            "infer_steps", "infer_frames_per_s"}  # fmt: skip
    assert keys <= row.keys()
    assert row["backbone"] == {"name": "vovnet", "width": 0.25}
    assert row["neck"] == bench.SMALL
    assert row["params_backbone"] > 0 and row["params_neck_head"] > 0
    assert row["params_total"] == row["params_backbone"] + row["params_neck_head"]
    assert row["train_window"] == 8 and row["train_steps"] == 1
    assert row["full_step_seconds_estimate"] is None  # no limit asked for
    assert row["train_frames_per_s"] > 0 and row["infer_frames_per_s"] > 0


def test_nothing_is_written(run):
    _, unchanged = run
    assert unchanged


def test_table_shows_the_row(run):
    rows, _ = run
    line = bench.throughput_table(rows)[2]
    assert line.startswith("| vovnet_small (width=0.25) | cpu | SMALL | 32×32 | 8 | 1 |")


def test_a_step_over_the_limit_is_timed_on_the_short_window():
    row = bench.bench_variant(TINY, CPU, warmup=0, steps=1, step_limit=0.0, short_window=4)
    assert row["train_window"] == 4 and row["window"] == 8
    assert row["full_step_seconds_estimate"] > 0
    assert row["infer_frames_per_s"] > 0  # inference still sees the full window
    assert "train timed on 4 frames" in bench.note(row)


def test_a_loader_worker_ships_uint8_frames_and_float16_flow(tmp_path):
    """One paper-size batch per layout: the paper's frame + flow cross at 1 + 4 bytes a pixel;
    the recipe adds two earlier frames (uint8) and the distance from the face at rest
    (float32)."""
    spec = bench.mock(1, 1, 200)
    loader = bench.bench_loader(spec, 1, tmp_path)
    pixels_kib = bench.PAPER_PX**2 / 1024
    paper, recipe = loader["layouts"]["paper"], loader["layouts"]["recipe"]
    assert paper["kib_per_frame"] == pytest.approx(pixels_kib * (1 + 4), rel=1e-3)
    assert recipe["kib_per_frame"] == pytest.approx(pixels_kib * (1 + 2 + 4 + 4), rel=1e-3)
    assert (paper["channels"], recipe["channels"]) == (3, 6)
    assert paper["frames_per_s"] > 0 and recipe["frames_per_s"] > 0
    assert "| paper | 3 | **" in "\n".join(bench.loader_section({"loader": loader}))
