"""Windows over cached videos, and ground truth in window coordinates.

Positions are cached-frame indices (0 … T−1). Ground truth comes in the dataset's own frame
numbers and is mapped through each video's `source_frames` (which differ from a plain offset when
the video was resampled).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_VISIBLE = 0.5  # an interval cut by a window edge is kept if at least half of it is inside


def window_starts(n_frames: int, window: int, stride: int) -> list[int]:
    """Starts of windows covering every frame: `stride` apart, the last one flush with the end.

    A video shorter than the window gets one window at 0 (padded by the dataset).
    """
    if n_frames <= window:
        return [0]
    starts = list(range(0, n_frames - window + 1, stride))
    if starts[-1] != n_frames - window:
        starts.append(n_frames - window)
    return starts


def to_cached_indices(intervals: np.ndarray, source_frames: Sequence[int]) -> np.ndarray:
    """(N, 2) source frame numbers → (N, 2) cached indices covering the same frames.

    Onset → the first kept frame at or after it, offset → the last kept frame at or before it;
    an interval that falls between two kept frames shrinks to the kept frame nearest its middle.
    """
    source = np.asarray(source_frames)
    intervals = np.asarray(intervals, dtype=np.int64).reshape(-1, 2)
    onset = np.searchsorted(source, intervals[:, 0], side="left")
    offset = np.searchsorted(source, intervals[:, 1], side="right") - 1
    empty = onset > offset
    if empty.any():
        middle = (intervals[empty, 0] + intervals[empty, 1]) / 2
        nearest = np.abs(source[None, :] - middle[:, None]).argmin(axis=1)
        onset[empty] = offset[empty] = nearest
    last = len(source) - 1
    return np.stack([np.clip(onset, 0, last), np.clip(offset, 0, last)], axis=1)


def clip_to_window(
    segments: np.ndarray, labels: np.ndarray, start: int, window: int, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Video-coordinate intervals → those of one window, in window coordinates.

    A window played at `scale` (training windows at random speeds) shows video frame
    start + i × scale at position i: an interval keeps the positions whose frames' centres lie
    in its extent, and at least the one nearest its middle, so no interval is left without one.

    The rule for intervals cut by a window edge: the part inside is kept when it is at least
    MIN_VISIBLE of the interval (the model learns it as an expression whose end lies beyond the
    window), otherwise the interval is left out of this window; the neighbouring window, which
    overlaps by window − stride frames, sees it whole.
    """
    extent = (np.asarray(segments, dtype=np.float64).reshape(-1, 2) + [-0.5, 0.5] - start) / scale
    segments = np.stack([np.ceil(extent[:, 0]), np.floor(extent[:, 1])], axis=1)
    short = segments[:, 0] > segments[:, 1]
    segments[short] = np.floor(extent[short].mean(axis=1) + 0.5)[:, None]
    inside = np.clip(segments, 0, window - 1)
    visible = inside[:, 1] - inside[:, 0] + 1
    length = segments[:, 1] - segments[:, 0] + 1
    overlaps = (segments[:, 1] >= 0) & (segments[:, 0] <= window - 1)
    keep = overlaps & (visible >= MIN_VISIBLE * length)
    return inside[keep].astype(np.float32), np.asarray(labels)[keep]
