"""How much flow does the benchmark's mock put into a rendered MaE, ME and blink, next to its
distractors, at the crop sizes mespot uses? (experiments/bench/accuracy_log.md, "Fourth round")

Renders one mock face with an MaE (brows, amplitude 2.5 px at a 128-px face), an ME (mouth
corners, 0.6 px) and a blink, first with no distractor and then with the benchmark's
(`Nuisance()`); crops the face as mespot-preprocess does with margin 0.2, resizes it to 64 and
128 px and prints, per flow method, the 99.5th percentile of the flow magnitude inside the face
(in pixels of the 64-px crop, so sizes compare): from just before each event to its apex, and
between frames as far apart (17 for the MaE, 6 for the ME) where nothing happens.

    python experiments/bench/probes/flow_probe.py
"""

from __future__ import annotations

import cv2
import numpy as np

from mespot.data.face import crop, crop_box
from mespot.data.synth import render

MAE = render.Event("mae", 30, 45, 80, ("brows",), 2.5, 7)
ME = render.Event("me", 100, 104, 110, ("mouth_corners",), 0.6, 9)
BLINK = render.Event("blink", 140, 143, 146, ("eyelids",), 1.0, 3)
QUIET = (0, 84, 112)  # first frames of stretches without events
SIZE = (320, 240)

METHODS = {
    "TV-L1, mespot's setting": lambda: (
        cv2.optflow.DualTVL1OpticalFlow_create(
            nscales=4, warps=2, outerIterations=3, innnerIterations=10, epsilon=0.03
        ).calc
    ),
    "TV-L1, OpenCV's defaults": lambda: cv2.optflow.DualTVL1OpticalFlow_create().calc,
    "Farnebäck": lambda: (
        lambda a, b, _: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    ),
    "DIS medium": lambda: cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc,
}


def peak(flow_fn, frames, a: int, b: int, size: int) -> float:
    """99.5th percentile of |flow| from frame a to b inside the face, in 64-px-crop pixels."""
    flow = flow_fn(frames[a], frames[b], None)
    inner = slice(size * 10 // 64, size * 54 // 64)
    return float(np.percentile(np.hypot(flow[..., 0], flow[..., 1])[inner, inner], 99.5)) * (
        64 / size
    )


def main() -> None:
    appearance = render.sample_appearance(np.random.default_rng(0))
    box = crop_box(render.face_box(appearance, SIZE), *SIZE, margin=0.2)
    print("| crop | distractors | flow | MaE | still, 17 apart | ME | still, 6 apart | blink |")
    print("|--:|---|---|--:|--:|--:|--:|--:|")
    for size in (64, 128):
        for label, nuisance in (("none", render.Nuisance(0, 0, 0, 0)), ("all", render.Nuisance())):
            video = render.render_video(
                appearance, [MAE, ME, BLINK], 160, size=SIZE, grey=True, nuisance=nuisance, seed=5
            )
            frames = [crop(frame, box, size) for frame in video]
            for name, make in METHODS.items():
                fn = make()
                values = []
                for event in (MAE, ME, BLINK):
                    gap = event.apex - event.onset + 2
                    values.append(peak(fn, frames, event.onset - 2, event.apex, size))
                    if event is not BLINK:
                        values.append(np.mean([peak(fn, frames, t, t + gap, size) for t in QUIET]))
                cells = " | ".join(f"{v:.2f}" for v in values)
                print(f"| {size} px | {label} | {name} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
