"""What training draws for each window: where it starts, whether the face is seen in a mirror, the
light. The draws happen where the window is read (a loader worker); InputSpec.assemble applies the
mirror and the light where the model runs.

A small dataset shows every expression at the same few grid positions, epoch after epoch, and
would be learned by heart: each draw shifts its window by up to half a stride either way. Half
the windows show the face mirrored (faces are near enough symmetric that a mirrored expression is
still one), and each window's light is scaled by a gain in [0.9, 1.1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Draw:
    """One window's augmentation: its start, mirror and light gain (the identity: `Draw(start)`)."""

    start: int
    mirror: bool = False
    gain: float = 1.0


class WindowAugment:
    """Draws each training window's augmentation from one seeded generator (`rng`, which a
    checkpoint saves and a resumed run restores; each loader worker seeds its own)."""

    def __init__(self, stride: int, seed: int = 0):
        self.stride = stride
        self.rng = np.random.default_rng(seed)

    def draw(self, start: int, n_frames: int, window: int) -> Draw:
        """A window's start up to half a stride from `start` (the window still inside the
        video), then its mirror and light."""
        half = self.stride // 2
        shifted = start + int(self.rng.integers(-half, half + 1))
        shifted = min(max(shifted, 0), max(n_frames - window, 0))
        mirror = bool(self.rng.random() < 0.5)
        return Draw(shifted, mirror, float(self.rng.uniform(0.9, 1.1)))
