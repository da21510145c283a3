"""A non-learned optical-flow spotter in the spirit of the MEGC baselines: `model=baseline`.

MDMD (Main Directional Maximal Difference; Wang et al., Neurocomputing 2017), the method of the
MEGC 2020 baseline (He et al. 2020), reads optical flow only. For a frame t and a horizon of k
frames it compares the motion from the "head" frame t−k to the current frame t with the motion
from t−k to the "tail" frame t+k: an expression that starts after t−k and is over by t+k has
moved the face at t and let it return by t+k, so the difference of the two magnitudes is large;
a held expression, a head turn or a drift moves both and cancels.

Here, from the cached flow (flow of frame t from t−1, in pixels of the face crop):

1. Face and head: the video's detected face box is cut out of the crop (preprocessing added a
   margin of hair and background around it), and each frame's median flow over it — the head's
   translation — is subtracted.
2. Displacements are sums of per-frame flows: current(t) = Σ flow(t−k+1 … t) and
   tail(t) = Σ flow(t−k+1 … t+k).
3. The face is cut into grid × grid blocks (6 × 6, MDMD's). In each block the main direction is
   the one of 8 direction bins of `current` holding most pixels; over those pixels,
   |current| − |tail|, the mean of its top third is the block's value (MDMD's).
4. Per frame: F(t) = the mean of the top third of the blocks' values, then MDMD's contrast
   c(t) = F(t) − (F(t−k) + F(t+k)) / 2, which removes the level that flow noise alone gives.
   F needs the whole horizon t−k … t+k inside the video; near its ends the contrast uses one
   side.
5. Two horizons, in seconds times each video's cached frame rate: k = 0.4 s, whose peaks are
   typed ME, and k = 1.3 s, typed MaE — the MEGC 2020 baseline's 12 / 39 frames at CAS(ME)²'s
   30 fps and 80 / 260 at SAMM-LV's 200. A horizon of k finds expressions up to about 2k long.
6. Peaks: local maxima of c over ± k/2 with c > 0. An expression found at t* by a horizon k
   lies within t* ± k (it starts after the head frame and ends before the tail frame); the
   interval reported is t* ± extent·k, extent per type (`me_extent` 0.5: 0.43 s at 30 fps;
   `mae_extent` 0.75: 2 s). Durations can further be limited per type by the shared
   post-processing (`postprocess.limits`, seconds; ME ≤ 0.5 s by default).
7. Score: tanh(c(t*) / scale), with c in pixels of a 128-pixel-wide face and a fixed scale per
   type (`me_scale`, `mae_scale`: a typical micro- and macro-expression contrast), so both
   types score in [0, 1) on one scale; the fold's validation subjects choose one threshold per type
   (mespot/baseline.py), never its test subject.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mespot.errors import UserError

DIRECTIONS = 8  # direction bins of 45°
REFERENCE_SIZE = 128.0  # scores read the contrast in pixels of a face this wide
MAE, ME = 0, 1  # labels, as everywhere
WHOLE = (0.0, 0.0, 1.0, 1.0)  # a face box (left, top, right, bottom): the whole crop


@dataclass(frozen=True)
class Scale:
    """One horizon of k frames: the label of its peaks, the half-width of their intervals
    (frames) and their score scale (contrast in px of a 128-px-wide face)."""

    k: int
    label: int
    half_width: float
    score_scale: float


def face_region(flow: Tensor, box: Sequence[float] = WHOLE) -> Tensor:
    """The part of (…, H, W) inside box = (left, top, right, bottom), fractions of the crop."""
    h, w = flow.shape[-2:]
    left, top, right, bottom = box
    x0, x1, y0, y1 = round(left * w), round(right * w), round(top * h), round(bottom * h)
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise UserError(f"face box {tuple(box)} is not inside the crop")
    return flow[..., y0:y1, x0:x1]


def face_box(meta: Mapping) -> tuple[float, float, float, float]:
    """A cached video's detected face box in its crop (fractions), from its meta.json; the
    whole crop when no face was detected."""
    face = meta.get("face") or {}
    if not (face.get("found") and face.get("detected") and face.get("crop")):
        return WHOLE
    x, y, w, h = face["detected"]
    cx, cy, side, _ = face["crop"]
    box = ((x - cx) / side, (y - cy) / side, (x + w - cx) / side, (y + h - cy) / side)
    return tuple(min(1.0, max(0.0, v)) for v in box)


def centred(fraction: float) -> tuple[float, float, float, float]:
    """The face box of a centred square, `fraction` of the crop's side."""
    if not 0 < fraction <= 1:
        raise UserError(f"model.face={fraction!r} must be in (0, 1]")
    low, high = (1 - fraction) / 2, (1 + fraction) / 2
    return (low, low, high, high)


def remove_global_motion(flow: Tensor) -> Tensor:
    """(T, 2, H, W) flow minus each frame's median flow (the head's translation)."""
    median = flow.flatten(2).median(dim=-1).values
    return flow - median[:, :, None, None]


def cumulative(flow: Tensor) -> Tensor:
    """(T, 2, H, W) per-frame flow → each frame's displacement since the first frame (whose
    own flow, from the frame before it, is left out)."""
    cum = flow.cumsum(dim=0)
    return cum - cum[:1]


def _blocks(field: Tensor, grid: int) -> Tensor:
    """(T, 2, H, W) → (T, grid, grid, 2, pixels per block); the last H % grid rows and W % grid
    columns are left out, as MDMD does."""
    t, c, h, w = field.shape
    bh, bw = h // grid, w // grid
    if bh == 0 or bw == 0:
        raise UserError(f"model.grid={grid} is larger than the {h}×{w}-pixel face")
    field = field[:, :, : bh * grid, : bw * grid].reshape(t, c, grid, bh, grid, bw)
    return field.permute(0, 2, 4, 1, 3, 5).reshape(t, grid, grid, c, bh * bw)


def block_values(current: Tensor, tail: Tensor, grid: int, top_pixels: float) -> Tensor:
    """MDMD's value of each block (T, grid, grid) from displacements (T, 2, H, W): over the
    pixels of the main direction of `current` (the bin of 8 holding most pixels), the mean of
    the top `top_pixels` fraction of |current| − |tail|."""
    cur, tl = _blocks(current, grid), _blocks(tail, grid)
    angle = torch.atan2(cur[..., 1, :], cur[..., 0, :])  # (T, g, g, P), in [-π, π]
    bins = ((angle + math.pi) / (2 * math.pi / DIRECTIONS)).floor().long() % DIRECTIONS
    main = F.one_hot(bins, DIRECTIONS).sum(dim=-2).argmax(dim=-1)
    pixels = bins == main[..., None]
    difference = _length(cur) - _length(tl)
    ranked = difference.masked_fill(~pixels, -math.inf).sort(dim=-1, descending=True).values
    ranked = ranked.masked_fill(ranked == -math.inf, 0.0)
    n = (pixels.sum(dim=-1) * top_pixels).round().clamp(min=1).long()
    return ranked.cumsum(dim=-1).gather(-1, (n - 1)[..., None]).squeeze(-1) / n


def _length(blocks: Tensor) -> Tensor:
    """|displacement| of (…, 2, P) blocks. hypot, not norm(dim=-2): on these strided views the
    norm took two thirds of the baseline's time (50× slower)."""
    return torch.hypot(blocks[..., 0, :], blocks[..., 1, :])


def mdmd_contrast(cum: Tensor, k: int, grid: int, top_pixels: float, top_blocks: float) -> Tensor:
    """MDMD's contrast c (T,) for a horizon of k frames, from displacements since the first
    frame (T, 2, H, W); NaN where it is not defined (F needs the whole horizon)."""
    n = cum.shape[0]
    contrast = torch.full((n,), math.nan)
    if n < 2 * k + 1:
        return contrast
    t = torch.arange(k, n - k)
    head = cum[t - k]
    values = block_values(cum[t] - head, cum[t + k] - head, grid, top_pixels).flatten(1)
    feature = torch.full((n,), math.nan)
    feature[t] = values.topk(max(1, round(values.shape[1] * top_blocks)), dim=1).values.mean(1)
    sides = torch.stack([feature.roll(k), feature.roll(-k)])  # F(t − k), F(t + k)
    sides[0, :k] = math.nan
    sides[1, n - k :] = math.nan
    return feature - sides.nanmean(dim=0)


def local_maxima(signal: Tensor, radius: int) -> list[int]:
    """Frames t where signal[t] > 0 is the maximum of signal[t − radius … t + radius] (NaN counts
    as nothing; on a plateau, its first frame and then one per radius)."""
    signal = signal.nan_to_num(nan=-math.inf)
    padded = F.pad(signal[None, None], (radius, radius), value=-math.inf)
    highest = F.max_pool1d(padded, 2 * radius + 1, stride=1)[0, 0]
    kept: list[int] = []
    for t in torch.nonzero((signal >= highest) & (signal > 0)).flatten().tolist():
        if not kept or t - kept[-1] > radius:
            kept.append(t)
    return kept


def spot_flow(
    flow: Tensor,
    scales: Sequence[Scale],
    grid: int = 6,
    top_pixels: float = 1 / 3,
    top_blocks: float = 1 / 3,
    global_motion: str = "median",
    face: Sequence[float] = WHOLE,
    keep: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Flow of consecutive frames (T, 2, H, W) in pixels → (segments (N, 2), scores (N,),
    labels (N,)), segments in its frame indices (inclusive, possibly reaching past its ends).
    Only peaks in keep = [lo, hi) are reported (the other frames are context)."""
    flow = face_region(flow.float(), face)
    if global_motion == "median":
        flow = remove_global_motion(flow)
    elif global_motion != "none":
        raise UserError(f"model.global_motion={global_motion!r}: use median or none")
    cum = cumulative(flow)
    lo, hi = keep if keep is not None else (0, len(cum))
    to_reference = REFERENCE_SIZE / flow.shape[-1]
    segments, scores, labels = [], [], []
    for scale in scales:
        contrast = mdmd_contrast(cum, scale.k, grid, top_pixels, top_blocks)
        for peak in local_maxima(contrast, max(1, scale.k // 2)):
            if lo <= peak < hi:
                segments.append((peak - scale.half_width, peak + scale.half_width))
                scores.append(math.tanh(float(contrast[peak]) * to_reference / scale.score_scale))
                labels.append(scale.label)
    return (
        torch.tensor(segments, dtype=torch.float32).reshape(-1, 2),
        torch.tensor(scores, dtype=torch.float32),
        torch.tensor(labels, dtype=torch.long),
    )
