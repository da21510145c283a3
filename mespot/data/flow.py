"""Optical flow between two grey frames: TV-L1 (the paper's), DIS and Farnebäck from OpenCV.

Sign convention (OpenCV's): flow(prev, next)[y, x] = (dx, dy) such that the content at (x, y) in
`prev` is found at (x + dx, y + dy) in `next`. A face moving right gives positive dx.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import cv2
import numpy as np

from mespot.errors import UserError

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Our parameter names → OpenCV's keyword arguments (note OpenCV's spelling `innnerIterations`).
_TVL1_KEYWORDS = {
    "tau": "tau",
    "lambda": "lambda_",
    "theta": "theta",
    "nscales": "nscales",
    "warps": "warps",
    "epsilon": "epsilon",
    "inner_iterations": "innnerIterations",
    "outer_iterations": "outerIterations",
    "scale_step": "scaleStep",
    "gamma": "gamma",
    "median_filtering": "medianFiltering",
}
_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
_FARNEBACK_DEFAULTS = {
    "pyr_scale": 0.5,
    "levels": 3,
    "winsize": 15,
    "iterations": 3,
    "poly_n": 5,
    "poly_sigma": 1.2,
}
METHODS = ("tvl1", "dis", "farneback")


def make_flow(method: str, params: Mapping | None = None) -> FlowFn:
    """A function (prev, next) → (H, W, 2) float32 flow, for uint8 grey frames of equal size."""
    params = dict(params or {})
    if method == "tvl1":
        unknown = set(params) - set(_TVL1_KEYWORDS)
        _no_unknown(method, unknown, _TVL1_KEYWORDS)
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(
            **{_TVL1_KEYWORDS[k]: v for k, v in params.items()}
        )
        return lambda prev, nxt: tvl1.calc(prev, nxt, None)
    if method == "dis":
        _no_unknown(method, set(params) - {"preset"}, {"preset": None})
        preset = params.get("preset", "medium")
        if preset not in _DIS_PRESETS:
            raise UserError(f"flow.dis.preset={preset!r}; use one of {', '.join(_DIS_PRESETS)}")
        dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[preset])
        return lambda prev, nxt: dis.calc(prev, nxt, None)
    if method == "farneback":
        _no_unknown(method, set(params) - set(_FARNEBACK_DEFAULTS), _FARNEBACK_DEFAULTS)
        settings = {**_FARNEBACK_DEFAULTS, **params}
        return lambda prev, nxt: cv2.calcOpticalFlowFarneback(prev, nxt, None, flags=0, **settings)
    raise UserError(f"flow.method={method!r} is not known; use one of {', '.join(METHODS)}")


def _no_unknown(method: str, unknown: set, known: Mapping) -> None:
    if unknown:
        raise UserError(
            f"flow.{method}: unknown setting(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(known)}"
        )
