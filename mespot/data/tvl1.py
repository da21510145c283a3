"""TV-L1 optical flow in torch, batched: OpenCV's DualTVL1 algorithm, on any torch device.

A GPU then computes the paper's flow for hundreds of frame pairs at once, and a machine whose
OpenCV lacks the contrib build (no `cv2.optflow`) still has TV-L1. The algorithm is Zach, Pock
and Bischof's duality-based TV-L1 (2007) as OpenCV writes it (optflow/src/tvl1flow.cpp): an
image pyramid scaled by `scale_step`, at each scale `warps` linearisations of the data term, each
followed by at most `outer_iterations` × `inner_iterations` primal-dual steps that stop once the
flow moves less than `epsilon` px (root mean square over the image); the flow is median-filtered
before each outer iteration. Each pair stops on its own, as it would alone: a converged pair's
flow and dual variables are held while the others go on.

Where it differs from OpenCV on purpose: the warp samples the second image bicubically at the
exact sub-pixel position, where OpenCV's remap rounds it to 1/32 px. On the preprocessing
benchmark's known motion the two are equally accurate (tests/test_tvl1.py); on motion as faint
as that rounding (a still face, a few hundredths of a pixel per frame) their flows differ pixel
by pixel about as much as they measure, and a cache made with one is not the other's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mespot.errors import UserError

# OpenCV's defaults, under the names conf/preprocessing/default.yaml uses for flow.tvl1.
DEFAULTS = {
    "tau": 0.25,
    "lambda": 0.15,
    "theta": 0.3,
    "nscales": 5,
    "warps": 5,
    "epsilon": 0.01,
    "inner_iterations": 30,
    "outer_iterations": 10,
    "scale_step": 0.8,
    "gamma": 0.0,
    "median_filtering": 5,
}
MIN_SIZE = 16  # OpenCV's smallest pyramid level (px per side)


def check_params(params: Mapping) -> dict:
    """Our settings with OpenCV's defaults filled in; a clear error for what this one lacks."""
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise UserError(
            f"flow.tvl1_torch: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(DEFAULTS)}"
        )
    settings = {**DEFAULTS, **params}
    if settings["gamma"] != 0:
        raise UserError("flow.tvl1_torch.gamma: the torch TV-L1 has no illumination term; use 0")
    if settings["median_filtering"] not in (0, 1, 3, 5):
        raise UserError(
            f"flow.tvl1_torch.median_filtering={settings['median_filtering']}: use 0, 1, 3 or 5"
        )
    if not 0 < settings["scale_step"] < 1 or settings["nscales"] < 1 or settings["warps"] < 1:
        raise UserError("flow.tvl1_torch: needs 0 < scale_step < 1, nscales >= 1 and warps >= 1")
    return settings


@torch.no_grad()
def tvl1_flow(
    prev: Tensor, nxt: Tensor, params: Mapping | None = None, compiled: bool = False
) -> Tensor:
    """(N, H, W) grey frames (uint8, or float in 0-255) → (N, H, W, 2) float32 flow, OpenCV's
    sign convention: the content at (x, y) in `prev` is at (x + dx, y + dy) in `nxt`.
    `compiled`: the inner step through torch.compile (the GPU check times both)."""
    iteration = _compiled_iteration() if compiled else _iteration
    p = check_params(params or {})
    i0, i1 = prev.float(), nxt.float()
    sizes = _pyramid_sizes(tuple(i0.shape[-2:]), p["nscales"], p["scale_step"])
    levels = [(i0, i1)]
    for size in sizes[1:]:
        levels.append(tuple(_resize(image, size, 1 / p["scale_step"]) for image in levels[-1]))
    flow = i0.new_zeros(i0.shape[0], 2, *sizes[-1])
    for s in range(len(sizes) - 1, -1, -1):
        flow = _one_scale(*levels[s], flow, p, iteration)
        if s > 0:
            finer = sizes[s - 1]
            flow = _resize(flow, finer, sizes[s][0] / finer[0], sizes[s][1] / finer[1])
            flow = flow / p["scale_step"]
    return flow.permute(0, 2, 3, 1).contiguous()


def _pyramid_sizes(size: tuple[int, int], nscales: int, step: float) -> list[tuple[int, int]]:
    """(H, W) of each level, finest first: OpenCV rounds each level's size from the one above
    and stops before a side falls under MIN_SIZE."""
    sizes = [size]
    for _ in range(1, nscales):
        h, w = (int(np.rint(side * step)) for side in sizes[-1])
        if h < MIN_SIZE or w < MIN_SIZE:
            break
        sizes.append((h, w))
    return sizes


def _resize(image: Tensor, size: tuple[int, int], scale_y: float, scale_x: float | None = None):
    """cv2.resize with INTER_LINEAR over the last two axes: source coordinate (d + ½)·scale − ½,
    clamped at the edges. Two small matrices, so a batch resizes in two matrix products."""
    rows = _linear_weights(image.shape[-2], size[0], scale_y).to(image)
    cols = _linear_weights(image.shape[-1], size[1], scale_x or scale_y).to(image)
    return rows @ image @ cols.T


def _linear_weights(n_in: int, n_out: int, scale: float) -> Tensor:
    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    for d in range(n_out):
        f = (d + 0.5) * scale - 0.5
        s = math.floor(f)
        f -= s
        if s < 0:
            s, f = 0, 0.0
        if s >= n_in - 1:
            s, f = n_in - 1, 0.0
        weights[d, s] += 1 - f
        if f:
            weights[d, s + 1] += f
    return weights


def _centred_gradient(image: Tensor) -> tuple[Tensor, Tensor]:
    """Half the central difference; at the borders half the one-sided one (OpenCV's)."""
    padded = F.pad(image[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    dx = 0.5 * (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2])
    dy = 0.5 * (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1])
    return dx, dy


def _forward_gradient(u: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences, 0 on the last column (x) and the last row (y)."""
    dx = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    return dx, dy


def _divergence(px: Tensor, py: Tensor) -> Tensor:
    """Backward differences, the dual field taken as 0 before the first column and row."""
    return px - F.pad(px[..., :, :-1], (1, 0, 0, 0)) + py - F.pad(py[..., :-1, :], (0, 0, 1, 0))


def _median(u: Tensor, k: int) -> Tensor:
    """k × k median of each channel, edges replicated (cv2.medianBlur)."""
    n, c, h, w = u.shape
    padded = F.pad(u, (k // 2,) * 4, mode="replicate")
    windows = padded.unfold(2, k, 1).unfold(3, k, 1)  # (n, c, h, w, k, k)
    return windows.reshape(n, c, h, w, k * k).median(dim=-1).values


def _warp(images: Tensor, flow: Tensor) -> Tensor:
    """(N, C, H, W) images sampled bicubically at x + flow (zero outside).

    In float64: grid_sample takes positions in [-1, 1], and in float32 the round trip to
    pixels misses whole pixels by ~1e-5, enough at the zero-padded border to give two identical
    frames up to 0.7 px of flow; in float64 a zero flow samples every pixel exactly."""
    n, _, h, w = images.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=torch.float64),
        torch.arange(w, device=flow.device, dtype=torch.float64),
        indexing="ij",
    )
    flow = flow.double()
    grid = torch.stack(
        [(xs + flow[:, 0]) * (2 / max(w - 1, 1)) - 1, (ys + flow[:, 1]) * (2 / max(h - 1, 1)) - 1],
        dim=-1,
    )
    sampled = F.grid_sample(
        images.double(), grid, mode="bicubic", padding_mode="zeros", align_corners=True
    )
    return sampled.to(images.dtype)


def _iteration(u, px, py, rho_c, grad_i, bound, down, onto, theta: float, taut: float):
    """One primal-dual step (OpenCV's estimateV, divergence, estimateU, forwardGradient,
    estimateDualVariables): the new flow, the new dual variables, each pair's summed squared
    change of the flow."""
    rho = rho_c + (grad_i * u).sum(1, keepdim=True)
    step = torch.where(rho < -bound, down, torch.where(rho > bound, -down, -rho * onto))
    new_u = u + step + theta * _divergence(px, py)
    change = (new_u - u).square().sum((1, 2, 3))
    ux, uy = _forward_gradient(new_u)
    norm = 1 + taut * torch.hypot(ux, uy)
    return new_u, (px + taut * ux) / norm, (py + taut * uy) / norm, change


@functools.cache
def _compiled_iteration():
    """_iteration through torch.compile: its ~30 element-wise kernels fused into a few, which
    is what a GPU is short of here (the eager step reads and writes every tensor ~30 times).
    Compiled once per process; new shapes reuse it (dynamic)."""
    return torch.compile(_iteration, dynamic=True)


def _one_scale(i0: Tensor, i1: Tensor, u: Tensor, p: Mapping, iteration=_iteration) -> Tensor:
    """The flow `u` (N, 2, H, W) refined at one pyramid level (OpenCV's procOneScale)."""
    n, _, h, w = u.shape
    limit = p["epsilon"] ** 2 * h * w  # OpenCV's scaledEpsilon: the summed squared change
    l_t, theta, taut = p["lambda"] * p["theta"], p["theta"], p["tau"] / p["theta"]
    i1x, i1y = _centred_gradient(i1)
    stacked = torch.stack([i1, i1x, i1y], dim=1)
    px, py = torch.zeros_like(u), torch.zeros_like(u)  # dual variables: (p11, p21), (p12, p22)
    for _ in range(p["warps"]):
        warped = _warp(stacked, u)
        i1w, grad_i = warped[:, 0:1], warped[:, 1:3]  # I1(x+u), ∇I1(x+u)
        grad = (grad_i * grad_i).sum(1, keepdim=True)
        rho_c = i1w - (grad_i * u).sum(1, keepdim=True) - i0[:, None]
        # the thresholding step's three cases, fixed for the warp: a step of l_t·∇I1 against
        # the sign of the residual, or onto the line where it vanishes (none where ∇I1 ≈ 0)
        bound = l_t * grad
        down = l_t * grad_i
        onto = grad_i * torch.where(grad > torch.finfo(torch.float32).eps, grad.reciprocal(), 0)
        error = torch.full((n,), math.inf, device=u.device)
        for _ in range(p["outer_iterations"]):
            active = error > limit
            running = int(active.sum())
            if running == 0:
                break
            if p["median_filtering"] > 1:
                median = _median(u, p["median_filtering"])
                u = median if running == n else _held(active, median, u)
            for _ in range(p["inner_iterations"]):
                active = error > limit
                running = int(active.sum())
                if running == 0:
                    break
                new_u, new_px, new_py, change = iteration(
                    u, px, py, rho_c, grad_i, bound, down, onto, theta, taut
                )
                if running == n:
                    u, px, py, error = new_u, new_px, new_py, change
                else:  # converged pairs keep their flow and dual variables
                    u, px, py = (_held(active, a, b) for a, b in
                                 ((new_u, u), (new_px, px), (new_py, py)))  # fmt: skip
                    error = torch.where(active, change, error)
    return u


def _held(active: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """`new` where the pair is still `active`, `old` where it has converged."""
    return torch.where(active[:, None, None, None], new, old)
