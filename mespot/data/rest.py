"""The face at rest: how far each frame lies from it, through a whole expression.

Frame differences see an expression while it moves, at its rise and its fall, hardly at its
apex. What stays large from onset to offset is the frame's distance from the face at rest. Over
a long stretch of a video most frames show the face at rest, so the stretch's median frame
stands in for it, with nothing annotated and nothing learned: the head reads where an
expression starts and ends from it. Each frame's mean brightness is taken out first: a room's
light drifts.

The median is taken every `span // 4` frames over the `span` frames around (every few of them,
about 75 per median, to keep it cheap), once per video, and interpolated in between, so a slow
drift of pose or light moves the face at rest with it.
"""

from __future__ import annotations

import numpy as np

SAMPLES = 75  # frames per median


def centred(frames: np.ndarray) -> np.ndarray:
    """(L, ...) uint8 frames → float32 in [0, 1] less each frame's mean brightness."""
    frames = np.divide(frames, 255.0, dtype=np.float32)
    frames -= frames.mean(axis=tuple(range(1, frames.ndim)), keepdims=True)
    return frames


class RestFace:
    """The face at rest along one video (`frames`: (T, ...) uint8, memory-mapped or not)."""

    def __init__(self, frames: np.ndarray, span: int):
        n = len(frames)
        self.step = max(span // 4, 1)
        half, every = span // 2, max(span // SAMPLES, 1)
        anchors = np.arange(0, n + self.step - 1, self.step).clip(max=n - 1)
        self.medians = np.stack([
            np.median(centred(frames[max(a - half, 0) : min(a + half + 1, n) : every]), axis=0)
            for a in anchors
        ]).astype(np.float16)  # fmt: skip

    def distance(self, frames: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Centred `frames` (shown at these video `positions`) less the face at rest there."""
        where = positions / self.step
        below = np.minimum(where.astype(np.int64), len(self.medians) - 1)
        above = np.minimum(below + 1, len(self.medians) - 1)
        weight = (where - below).clip(0, 1).astype(np.float32)
        weight = weight.reshape(-1, *[1] * (self.medians.ndim - 1))
        # the few medians a window touches, in float32 once (their float16 values exactly),
        # then arithmetic in place: a loader worker's costliest part, in half the time
        first = int(below.min())
        medians = self.medians[first : int(above.max()) + 1].astype(np.float32)
        rest = medians[below - first]
        rest *= 1 - weight
        later = medians[above - first]
        later *= weight
        rest += later
        distance = centred(frames)
        distance -= rest
        return distance
