"""Anchor-free head: points, label assignment, decoding round trip, and the three-part loss."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mespot.errors import UserError
from mespot.models.head import (
    DEFAULT_RANGES,
    SpottingHead,
    assign_targets,
    decode,
    default_ranges,
    make_points,
)
from mespot.models.losses import SpottingLoss, iou_loss, sigmoid_focal_loss

LENGTHS = (64, 32, 16, 8, 4)  # a 128-frame window
STRIDES = (2, 4, 8, 16, 32)
MAE, ME = 0, 1
EVERY_RANGE = ((0.0, math.inf),) * len(STRIDES)


def points(ranges=DEFAULT_RANGES):
    return make_points(LENGTHS, STRIDES, ranges)


def segments(*pairs):
    return torch.tensor(pairs, dtype=torch.float32).reshape(-1, 2)


def labels(*values):
    return torch.tensor(values, dtype=torch.long)


def positives(pts, pos_mask):
    """{(stride, t)} of the positive points."""
    return {(int(s), float(t)) for t, s in pts[pos_mask, :2].tolist()}


# --- points ---------------------------------------------------------------------------------


def test_points_count_positions_and_ranges():
    pts = points()
    assert pts.shape == (sum(LENGTHS), 4)
    level_of = torch.repeat_interleave(torch.arange(5), torch.tensor(LENGTHS))
    assert pts[:, 1].tolist() == [STRIDES[i] for i in level_of]
    assert pts[:3, 0].tolist() == [0.5, 2.5, 4.5]  # centres of frames 0-1, 2-3, 4-5
    assert pts[64:66, 0].tolist() == [1.5, 5.5]  # centres of frames 0-3, 4-7
    assert pts[-4:, 0].tolist() == [15.5, 47.5, 79.5, 111.5]
    assert pts[-1, 2:].tolist() == [64.0, math.inf]


def test_default_ranges_double_and_end_open():
    assert default_ranges(5) == DEFAULT_RANGES
    assert default_ranges(1) == ((0.0, math.inf),)
    with pytest.raises(UserError):
        make_points(LENGTHS, STRIDES, DEFAULT_RANGES[:3])


# --- assignment -----------------------------------------------------------------------------


def test_me_of_12_frames_lands_on_the_levels_whose_ranges_hold_it():
    pts = points()
    cls, reg, pos = assign_targets(pts, segments((40, 51)), labels(ME))
    # Extent [39.5, 51.5], centre 45.5. Stride 2: 44.5 and 46.5 have max distance 7 < 8 (42.5
    # and 48.5 reach 9); stride 4: 41.5 and 49.5 have 10 in [8, 16) while 45.5 has 6.
    assert positives(pts, pos) == {(2, 44.5), (2, 46.5), (4, 41.5), (4, 49.5)}
    assert cls[pos].tolist() == [[0.0, 1.0]] * 4
    assert reg[pts[:, 0] == 44.5][0].tolist() == [5.0, 7.0]
    outside = (pts[:, 0] < 39.5) | (pts[:, 0] > 51.5)
    assert not pos[outside].any()
    assert cls[~pos].sum() == 0 and reg[~pos].sum() == 0


def test_one_frame_gt_is_hit_by_the_point_on_its_boundary():
    pts = points()
    for frame in (10, 11):
        _, reg, pos = assign_targets(pts, segments((frame, frame)), labels(ME))
        assert pos.sum() == 1
        assert sorted(reg[pos][0].tolist()) == [0.0, 1.0]


def test_overlapping_gts_pick_the_shorter():
    pts = points(EVERY_RANGE)
    mae, me = (30, 69), (44, 51)
    cls, reg, pos = assign_targets(pts, segments(mae, me), labels(MAE, ME), center_sample=False)
    t = pts[:, 0]
    in_me = (t >= 43.5) & (t <= 51.5)
    in_mae_only = (t >= 29.5) & (t <= 69.5) & ~in_me
    assert pos[in_me].all() and pos[in_mae_only].all()
    assert (cls[in_me].argmax(1) == ME).all() and (cls[in_mae_only].argmax(1) == MAE).all()
    assert torch.equal(reg[in_me], torch.stack([t - 43.5, 51.5 - t], 1)[in_me])


def test_centre_sampling_shrinks_the_positive_set():
    pts = points(EVERY_RANGE)
    gt, lab = segments((20, 79)), labels(MAE)
    _, _, everywhere = assign_targets(pts, gt, lab, center_sample=False)
    _, _, central = assign_targets(pts, gt, lab, center_sample=True, radius=1.5)
    assert not (central & ~everywhere).any()
    assert central.sum() < everywhere.sum()
    near = (pts[:, 0] - 49.5).abs() <= 1.5 * pts[:, 1]
    assert torch.equal(central, everywhere & near)


def test_no_gt_gives_no_positives():
    pts = points()
    cls, reg, pos = assign_targets(pts, segments(), labels())
    assert cls.shape == (len(pts), 2) and reg.shape == (len(pts), 2)
    assert not pos.any() and cls.sum() == 0 and reg.sum() == 0


# --- decoding -------------------------------------------------------------------------------


def perfect_outputs(cls_targets, reg_targets):
    return torch.where(cls_targets > 0, 20.0, -20.0), reg_targets


def test_encode_decode_round_trip_is_exact():
    pts = points()
    gts = segments((3, 3), (10, 21), (30, 69), (80, 127))
    cls, reg, pos = assign_targets(pts, gts, labels(ME, ME, MAE, MAE))
    found, scores, found_labels = decode(pts, *perfect_outputs(cls, reg), top_k=1000)
    assert len(found) == pos.sum()
    assert {tuple(s) for s in found.tolist()} == {tuple(g) for g in gts.tolist()}
    for segment, label in zip(found.tolist(), found_labels.tolist(), strict=True):
        assert label == (ME if segment[1] - segment[0] < 20 else MAE)
    assert (scores > 0.99).all()


def test_decode_threshold_top_k_and_short_extents():
    pts = make_points([4], [2], [(0.0, math.inf)])
    logits = torch.tensor([[-5.0, 3.0], [2.0, -5.0], [1.0, 0.0], [-9.0, -9.0]])
    offsets = torch.tensor([[1.0, 1.0], [0.25, 0.25], [2.0, 3.0], [1.0, 1.0]])
    found, scores, found_labels = decode(pts, logits, offsets, score_threshold=0.6, top_k=2)
    assert found_labels.tolist() == [1, 0]
    assert scores.tolist() == pytest.approx([torch.sigmoid(torch.tensor(v)).item() for v in (3, 2)])
    # Point t=0.5 with extent [-0.5, 1.5] is frames 0..1; t=2.5 with extent 0.5 collapses.
    assert found.tolist() == [[0.0, 1.0], [2.5, 2.5]]


@settings(max_examples=60, deadline=None)
@given(length=st.integers(1, 128), data=st.data())
def test_every_gt_in_a_window_gets_a_positive_that_decodes_to_it(length, data):
    onset = data.draw(st.integers(0, 128 - length))
    pts = points()
    gt = segments((onset, onset + length - 1))
    cls, reg, pos = assign_targets(pts, gt, labels(MAE))
    assert pos.any()
    found, _, _ = decode(pts, *perfect_outputs(cls, reg))
    assert (found == gt).all()


# --- losses ---------------------------------------------------------------------------------


def test_focal_loss_values():
    one, zero = torch.tensor([1.0]), torch.tensor([0.0])
    assert sigmoid_focal_loss(torch.tensor([10.0]), one) < 1e-6
    assert sigmoid_focal_loss(torch.tensor([-10.0]), zero) < 1e-6
    assert sigmoid_focal_loss(torch.tensor([-10.0]), one) > 2.0  # ≈ 0.25 · 1 · 10
    # p = 0.75 on a positive: 0.25 · (1 - 0.75)^2 · -log(0.75)
    expected = 0.25 * 0.25**2 * -math.log(0.75)
    assert sigmoid_focal_loss(torch.tensor([math.log(3.0)]), one).item() == pytest.approx(expected)
    # Sums: a positive at p = 0.5 plus a negative at p = 0.5.
    both = sigmoid_focal_loss(torch.zeros(2), torch.tensor([1.0, 0.0]))
    assert both.item() == pytest.approx((0.25 + 0.75) * 0.25 * math.log(2))


def test_iou_loss_values():
    boxes = torch.tensor([[2.0, 2.0], [3.0, 1.0], [4.0, 6.0]])
    assert iou_loss(boxes, boxes).tolist() == pytest.approx([0.0, 0.0, 0.0])
    half = iou_loss(torch.tensor([[0.0, 2.0]]), torch.tensor([[2.0, 2.0]]))  # [t, t+2] vs ±2
    assert half.item() == pytest.approx(0.5)
    third = iou_loss(torch.tensor([[0.0, 4.0]]), torch.tensor([[2.0, 2.0]]))  # 2 / 6 shared
    assert third.item() == pytest.approx(2 / 3)
    degenerate = iou_loss(torch.zeros(1, 2, requires_grad=True), torch.zeros(1, 2))
    degenerate.sum().backward()
    assert torch.isfinite(degenerate).all()


def two_positives():
    """One window of 3 points (stride 2), points 0 and 2 positive, hand-picked errors."""
    offsets = torch.tensor([[[4.0, 6.0], [1.0, 1.0], [5.0, 3.0]]])
    reg_targets = torch.tensor([[[4.0, 3.0], [0.0, 0.0], [4.0, 3.0]]])
    pos = torch.tensor([[True, False, True]])
    cls_targets = torch.zeros(1, 3, 2)
    cls_targets[0, [0, 2], ME] = 1.0
    return offsets, reg_targets, pos, cls_targets, torch.full((3,), 2.0)


def test_spotting_loss_hand_values():
    offsets, reg_targets, pos, cls_targets, strides = two_positives()
    loss = SpottingLoss().eval()
    out = loss(torch.zeros(1, 3, 2), offsets, cls_targets, reg_targets, pos, strides)
    assert out["num_pos"].item() == 2
    # In strides: errors (0, 1.5) → 1.0 and (0.5, 0) → 0.125; divided by 2 positives.
    assert out["l1"].item() == pytest.approx((1.0 + 0.125) / 2)
    # IoU 7/10 and 7/8.
    assert out["iou"].item() == pytest.approx((0.3 + 0.125) / 2)
    focal = (2 * 0.25 + 4 * 0.75) * 0.25 * math.log(2) / 2
    assert out["focal"].item() == pytest.approx(focal)
    weighted = SpottingLoss(focal=2.0, l1=0.0, iou=3.0).eval()
    out2 = weighted(torch.zeros(1, 3, 2), offsets, cls_targets, reg_targets, pos, strides)
    assert out2["loss"].item() == pytest.approx(2 * focal + 3 * out["iou"].item())


def test_positive_ema_moves_in_training_only():
    offsets, reg_targets, pos, cls_targets, strides = two_positives()
    loss = SpottingLoss(ema_momentum=0.9)
    args = (torch.zeros(1, 3, 2), offsets, cls_targets, reg_targets)
    loss(*args, pos, strides)
    assert loss.num_pos_ema.item() == pytest.approx(2.0)  # first step: the count itself
    loss(*args, torch.zeros_like(pos), strides)
    assert loss.num_pos_ema.item() == pytest.approx(0.9 * 2 + 0.1 * 1)
    loss.eval()
    out = loss(*args, pos, strides)
    assert loss.num_pos_ema.item() == pytest.approx(1.9)
    assert out["l1"].item() == pytest.approx(1.125 / 1.9)


@pytest.mark.parametrize("training", [True, False])
def test_zero_positives_give_a_finite_focal_only_loss(training):
    loss = SpottingLoss().train(training)
    logits = torch.randn(2, 10, 2, requires_grad=True)
    offsets = torch.rand(2, 10, 2, requires_grad=True)
    zeros = torch.zeros(2, 10, 2)
    out = loss(logits, offsets, zeros, zeros, torch.zeros(2, 10, dtype=torch.bool), torch.ones(10))
    assert out["l1"].item() == 0 and out["iou"].item() == 0
    assert torch.isfinite(out["loss"]) and out["loss"].item() == pytest.approx(out["focal"].item())
    out["loss"].backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(offsets.grad).all()


# --- head -----------------------------------------------------------------------------------


def features(batch=2, dim=16, device="cpu"):
    torch.manual_seed(0)
    return [torch.randn(batch, dim, n, device=device) for n in LENGTHS]


def test_head_shapes_non_negative_distances_and_prior():
    head = SpottingHead(16, strides=STRIDES)
    cls_logits, offsets = head(features())
    assert cls_logits.shape == (2, sum(LENGTHS), 2) and offsets.shape == (2, sum(LENGTHS), 2)
    assert (offsets >= 0).all()
    assert cls_logits.sigmoid().mean().item() == pytest.approx(0.01, abs=0.005)
    with pytest.raises(UserError):
        head(features()[:3])


def run_head_and_loss(device):
    head = SpottingHead(16, strides=STRIDES).to(device)
    loss = SpottingLoss().to(device)
    pts = make_points(LENGTHS, STRIDES, DEFAULT_RANGES, device=device)
    gts = [segments((10, 21), (40, 90)).to(device), segments().to(device)]
    labs = [labels(ME, MAE).to(device), labels().to(device)]
    targets = [assign_targets(pts, g, lab) for g, lab in zip(gts, labs, strict=True)]
    cls_t, reg_t, pos = (torch.stack(parts) for parts in zip(*targets, strict=True))
    cls_logits, offsets = head(features(device=device))
    out = loss(cls_logits, offsets, cls_t, reg_t, pos, pts[:, 1])
    out["loss"].backward()
    return head, out


def test_gradients_reach_the_head():
    head, out = run_head_and_loss("cpu")
    assert out["num_pos"].item() > 0 and out["l1"].item() > 0 and out["iou"].item() > 0
    for name, param in head.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert head.cls_out.weight.grad.abs().sum() > 0
    assert head.reg_out.weight.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_head_and_loss_run_on_cuda():
    head, out = run_head_and_loss("cuda")
    assert out["loss"].device.type == "cuda" and torch.isfinite(out["loss"])
    assert all(p.grad.device.type == "cuda" for p in head.parameters())
