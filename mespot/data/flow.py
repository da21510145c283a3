"""Optical flow between grey frames: TV-L1 (the paper's), DIS and Farnebäck from OpenCV, and the
same TV-L1 in torch (`tvl1_torch`, mespot/data/tvl1.py), which runs batched on a GPU.

Sign convention (OpenCV's): flow(prev, next)[y, x] = (dx, dy) such that the content at (x, y) in
`prev` is found at (x + dx, y + dy) in `next`. A face moving right gives positive dx.

A `Flow` takes a stack of pairs at once (`pairs`), the only way a GPU pays off. OpenCV's methods
go through the stack one pair at a time, on `threads` threads at once where asked: each thread its
own OpenCV object, each pair computed as one thread computes it alone (OpenCV's TV-L1 splits a
128-px image over cores less well than it does two images side by side).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from mespot.errors import UserError

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
METHODS = ("tvl1", "tvl1_torch", "dis", "farneback")
DEVICES = ("auto", "cpu", "cuda")
TORCH_BATCH = 128  # tvl1_torch's pairs per call: what keeps a GPU busy, little memory anywhere
PAIRS_PER_THREAD = 8  # OpenCV's pairs per call and thread when flow runs on several threads
PairFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class Flow:
    """Flow of frame pairs: `flow(prev, next)` for one pair of (H, W) uint8 frames,
    `flow.pairs(prevs, nexts)` for (N, H, W) stacks; both give float32 (…, H, W, 2). `batch`:
    how many pairs a call should hold (1 where pairs go one at a time anyway).

    With `threads` > 1 the pairs go to that many threads and `submit` returns at once, so the
    caller prepares the next frames while they run. Used in a `with` block, it stops its
    threads at the end."""

    def __init__(
        self,
        pair: PairFn | None = None,
        pairs: PairFn | None = None,
        batch: int = 1,
        threads: int = 1,
    ):
        self._pair, self._pairs, self.batch, self.threads = pair, pairs, batch, threads
        self._pool = ThreadPoolExecutor(threads, "flow") if threads > 1 else None

    def __enter__(self) -> Flow:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def __call__(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        if self._pair is not None:
            return self._pair(prev, nxt)
        return self._pairs(prev[None], nxt[None])[0]

    def pairs(self, prevs: np.ndarray, nexts: np.ndarray) -> np.ndarray:
        return self.submit(prevs, nexts)()

    def submit(self, prevs: np.ndarray, nexts: np.ndarray) -> Callable[[], np.ndarray]:
        """The flow of a stack of pairs, started: call the result to wait for it."""
        if len(prevs) == 0:
            empty = np.zeros((0, *np.shape(prevs)[1:], 2), dtype=np.float32)
            return lambda: empty
        if self._pool is not None:
            futures = [
                self._pool.submit(self._pair, a, b) for a, b in zip(prevs, nexts, strict=True)
            ]
            return lambda: np.stack([future.result() for future in futures])
        if self._pairs is not None:
            done = self._pairs(prevs, nexts)
        else:
            done = np.stack([self._pair(a, b) for a, b in zip(prevs, nexts, strict=True)])
        return lambda: done


def make_flow(
    method: str, params: Mapping | None = None, device: str = "auto", threads: int = 1
) -> Flow:
    """The flow of `method` with its settings; `device` places tvl1_torch (auto: the GPU when
    torch sees one). OpenCV's methods run on the CPU and take only device=auto or cpu, on
    `threads` threads (each pair's flow is the same on any number)."""
    params = dict(params or {})
    if device not in DEVICES:
        raise UserError(f"flow.device={device!r}; use one of {', '.join(DEVICES)}")
    if method != "tvl1_torch" and device == "cuda":
        raise UserError(f"flow.device=cuda needs flow.method=tvl1_torch (not {method})")
    if method == "tvl1":
        _no_unknown(method, set(params) - set(_TVL1_KEYWORDS), _TVL1_KEYWORDS)
        if not hasattr(cv2, "optflow"):
            raise UserError(
                f"flow.method=tvl1 needs OpenCV's contrib build (cv2 {cv2.__version__} has no "
                "cv2.optflow): pip install opencv-contrib-python-headless, or use "
                "flow.method=tvl1_torch"
            )
        keywords = {_TVL1_KEYWORDS[k]: v for k, v in params.items()}
        return _opencv(lambda: cv2.optflow.DualTVL1OpticalFlow_create(**keywords).calc, threads)
    if method == "tvl1_torch":
        return _torch_tvl1(params, device)
    if method == "dis":
        _no_unknown(method, set(params) - {"preset"}, {"preset": None})
        preset = params.get("preset", "medium")
        if preset not in _DIS_PRESETS:
            raise UserError(f"flow.dis.preset={preset!r}; use one of {', '.join(_DIS_PRESETS)}")
        return _opencv(lambda: cv2.DISOpticalFlow_create(_DIS_PRESETS[preset]).calc, threads)
    if method == "farneback":
        _no_unknown(method, set(params) - set(_FARNEBACK_DEFAULTS), _FARNEBACK_DEFAULTS)
        settings = {**_FARNEBACK_DEFAULTS, **params}

        def farneback():
            return lambda prev, nxt, _: cv2.calcOpticalFlowFarneback(
                prev, nxt, None, flags=0, **settings
            )

        return _opencv(farneback, threads)
    raise UserError(f"flow.method={method!r} is not known; use one of {', '.join(METHODS)}")


def _opencv(calculator: Callable[[], Callable], threads: int) -> Flow:
    """An OpenCV method's Flow: `calculator()` makes one `calc(prev, next, out)` (an OpenCV
    object holds buffers, so each thread makes its own)."""
    if threads < 1:
        raise UserError(f"flow threads={threads}: give at least 1")
    local = threading.local()

    def pair(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        if not hasattr(local, "calc"):
            local.calc = calculator()
        return local.calc(prev, nxt, None)

    return Flow(pair=pair, batch=threads * PAIRS_PER_THREAD if threads > 1 else 1,
                threads=threads)  # fmt: skip


def _torch_tvl1(params: dict, device: str) -> Flow:
    import torch  # only here: OpenCV's methods keep preprocessing free of torch

    from mespot.data.tvl1 import check_params, tvl1_flow

    check_params(params)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise UserError("flow.device=cuda, but torch sees no CUDA GPU; use flow.device=auto")
    where = torch.device(device)

    def pairs(prevs: np.ndarray, nexts: np.ndarray) -> np.ndarray:
        # a writable copy where needed: torch refuses to share a read-only (memory-mapped) array
        prev = torch.from_numpy(np.require(prevs, requirements=["C", "W"])).to(where)
        nxt = torch.from_numpy(np.require(nexts, requirements=["C", "W"])).to(where)
        return tvl1_flow(prev, nxt, params).cpu().numpy()

    return Flow(pairs=pairs, batch=TORCH_BATCH)


def _no_unknown(method: str, unknown: set, known: Mapping) -> None:
    if unknown:
        raise UserError(
            f"flow.{method}: unknown setting(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(known)}"
        )
