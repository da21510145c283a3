"""Anchor-free temporal head: points, label assignment, the network, decoding.

Every location of every pyramid level is a *point* standing for one window frame position `t`.
A point predicts, per class, whether an expression surrounds it, and two distances (frames) from
`t` back to the onset and forward to the offset, as in FCOS / ActionFormer.

Frame convention. An interval (onset, offset) holds the inclusive frames onset..offset, so it
covers the continuous *extent* [onset - 0.5, offset + 0.5] of length offset - onset + 1 (frame f
occupies [f - 0.5, f + 0.5]). Regression targets are distances to that extent:

    d_on = t - onset + 0.5,    d_off = offset + 0.5 - t,

and decoding undoes the half frames. Both distances are ≥ 0 for every point inside the extent
(a 1-frame GT included, which the point on its boundary hits with d = (1, 0)), so non-negative
head outputs can represent every target, and the 1D IoU of two extents equals the inclusive-frame
IoU the MEGC metric uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mespot.errors import UserError
from mespot.models.fpn import norm_groups

# Regression ranges for strides (2, 4, 8, 16, 32), bounding max(d_on, d_off) in frames: the
# finest level takes extents up to ~16 frames (all MEs at ~30 fps), each coarser level twice as
# long, the last everything beyond ~128 frames (the long MaEs). See `default_ranges`.
DEFAULT_RANGES: tuple[tuple[float, float], ...] = (
    (0.0, 8.0),
    (8.0, 16.0),
    (16.0, 32.0),
    (32.0, 64.0),
    (64.0, math.inf),
)


def default_ranges(n_levels: int, first: float = 8.0) -> tuple[tuple[float, float], ...]:
    """Doubling ranges [0, first), [first, 2 first), …, [first 2^(n-2), inf).

    With strides 2^(i+1) every level regresses distances of about 2 to 4 of its own strides, and
    the centre point of an interval of length n has max(d_on, d_off) ≈ n / 2, so level i holds
    lengths of about 2^(i+3) to 2^(i+4) frames for first = 8: level 0 the MEs (6-17 frames at
    30 fps), levels 1-4 the MaEs (10-120 frames, CAS(ME)² median 31). n_levels = 5 gives
    `DEFAULT_RANGES`.
    """
    if n_levels < 1:
        raise UserError(f"need at least one pyramid level (got {n_levels})")
    bounds = [0.0] + [first * 2.0**i for i in range(n_levels - 1)] + [math.inf]
    return tuple(zip(bounds[:-1], bounds[1:], strict=True))


def make_points(
    lengths: Sequence[int],
    strides: Sequence[int],
    ranges: Sequence[tuple[float, float]],
    device: torch.device | str | None = None,
) -> Tensor:
    """(P, 4) rows [t, stride, range_min, range_max], levels finest first, P = sum(lengths).

    Location i of a stride-s level summarises frames i*s .. i*s + s - 1, so it stands for their
    centre t = (i + 0.5) * s - 0.5 (window frame indices, float).
    """
    if not len(lengths) == len(strides) == len(ranges):
        raise UserError(
            f"one stride and one range per level: got {len(lengths)} levels, "
            f"{len(strides)} strides, {len(ranges)} ranges"
        )
    levels = []
    for length, stride, (lo, hi) in zip(lengths, strides, ranges, strict=True):
        t = (torch.arange(length, device=device, dtype=torch.float32) + 0.5) * stride - 0.5
        rest = torch.tensor([stride, lo, hi], device=device, dtype=torch.float32)
        levels.append(torch.cat([t[:, None], rest.expand(length, 3)], dim=1))
    return torch.cat(levels, dim=0)


def _qualifies(points: Tensor, segments: Tensor, center_sample: bool, radius: float) -> Tensor:
    """(P, M) bool: point p may learn GT m (inside it, near its centre, distance in range)."""
    t, stride, range_min, range_max = (points[:, i, None] for i in range(4))
    lo, hi = segments[None, :, 0] - 0.5, segments[None, :, 1] + 0.5
    d_on, d_off = t - lo, hi - t
    ok = (d_on >= 0) & (d_off >= 0)
    if center_sample:
        centre = (lo + hi) / 2
        ok &= (t >= torch.maximum(centre - radius * stride, lo)) & (
            t <= torch.minimum(centre + radius * stride, hi)
        )
    longest = torch.maximum(d_on, d_off)
    return ok & (longest >= range_min) & (longest < range_max)


def assign_targets(
    points: Tensor,
    gt_segments: Tensor,
    gt_labels: Tensor,
    num_classes: int = 2,
    center_sample: bool = True,
    radius: float = 1.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """Label every point of one window against its ground truth (M, 2) inclusive intervals.

    Returns cls_targets (P, C) 0/1, reg_targets (P, 2) extent distances (d_on, d_off) in frames
    (zeros on negatives) and pos_mask (P,). A point is positive for a GT when t lies in its
    extent, within radius * stride of its centre (if center_sample; the window is clipped to
    the extent) and max(d_on, d_off) lies in the level's [range_min, range_max). A point that
    qualifies for several GTs learns the shortest, which would otherwise be drowned out.
    """
    num_points = points.shape[0]
    if gt_segments.shape[0] == 0:
        return (
            points.new_zeros(num_points, num_classes),
            points.new_zeros(num_points, 2),
            torch.zeros(num_points, dtype=torch.bool, device=points.device),
        )
    segments = gt_segments.to(points)
    ok = _qualifies(points, segments, center_sample, radius)
    lengths = (segments[:, 1] - segments[:, 0] + 1).expand_as(ok)
    shortest, gt_index = torch.where(ok, lengths, math.inf).min(dim=1)
    pos_mask = torch.isfinite(shortest)
    chosen_labels = gt_labels.to(points.device)[gt_index]
    cls_targets = F.one_hot(chosen_labels, num_classes).to(points) * pos_mask[:, None]
    chosen = segments[gt_index]
    t = points[:, 0]
    reg_targets = torch.stack([t - chosen[:, 0] + 0.5, chosen[:, 1] + 0.5 - t], dim=1)
    return cls_targets, reg_targets * pos_mask[:, None], pos_mask


class Scale(nn.Module):
    """A learnable scalar, one per level, so a shared regression branch can fit each stride."""

    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _tower(dim: int, num_convs: int) -> nn.Sequential:
    """num_convs × (3×1 conv, GroupNorm, ReLU), length-preserving."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [
            nn.Conv1d(dim, dim, 3, padding=1, bias=False),
            nn.GroupNorm(norm_groups(dim), dim),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class SpottingHead(nn.Module):
    """Shared over levels: class logits (B, P, C) and distances (B, P, 2) in frames.

    Distances are relu(scale_l · raw) · stride_l (ActionFormer's choice): the raw output lives in
    units of the level's stride, so the shared convs see targets of similar size on every level,
    and ReLU, unlike exp, cannot overflow early in training. The classification bias starts at
    -log((1 - prior_prob) / prior_prob) (RetinaNet), so the many negatives do not swamp the focal
    loss in the first steps.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int = 2,
        num_convs: int = 2,
        prior_prob: float = 0.01,
        strides: Sequence[int] = (2, 4, 8, 16, 32),
    ) -> None:
        super().__init__()
        self.cls_tower = _tower(in_dim, num_convs)
        self.reg_tower = _tower(in_dim, num_convs)
        self.cls_out = nn.Conv1d(in_dim, num_classes, 3, padding=1)
        self.reg_out = nn.Conv1d(in_dim, 2, 3, padding=1)
        self.scales = nn.ModuleList(Scale() for _ in strides)
        self.strides = [int(s) for s in strides]
        nn.init.normal_(self.cls_out.weight, std=0.01)
        nn.init.constant_(self.cls_out.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        if len(features) != len(self.strides):
            raise UserError(f"head built for {len(self.strides)} levels, got {len(features)}")
        logits, offsets = [], []
        for x, scale, stride in zip(features, self.scales, self.strides, strict=True):
            logits.append(self.cls_out(self.cls_tower(x)).transpose(1, 2))
            raw = scale(self.reg_out(self.reg_tower(x)))
            offsets.append(F.relu(raw).transpose(1, 2) * stride)
        return torch.cat(logits, dim=1), torch.cat(offsets, dim=1)


def decode(
    points: Tensor,
    cls_logits: Tensor,
    offsets: Tensor,
    score_threshold: float = 0.05,
    top_k: int = 200,
) -> tuple[Tensor, Tensor, Tensor]:
    """One window's predictions → segments (K, 2) [onset, offset], scores (K,), labels (K,).

    Every (point, class) pair with sigmoid score above the threshold is a candidate; the top_k
    best are kept, best first. Segments are inclusive window frames (float, not clipped to the
    window: an expression may run past it); an extent shorter than one frame collapses to its
    centre so that offset ≥ onset always. No NMS: that runs later, in video coordinates.
    """
    scores = cls_logits.sigmoid().flatten()
    scores, flat = scores.topk(min(top_k, scores.numel()))
    keep = scores > score_threshold
    scores, flat = scores[keep], flat[keep]
    num_classes = cls_logits.shape[1]
    index, labels = flat // num_classes, flat % num_classes
    t = points[index, 0]
    lo, hi = t - offsets[index, 0], t + offsets[index, 1]
    centre = (lo + hi) / 2
    segments = torch.stack([torch.minimum(lo + 0.5, centre), torch.maximum(hi - 0.5, centre)], 1)
    return segments, scores, labels
