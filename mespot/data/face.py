"""One face box per video, then the same crop for every frame.

A fixed crop keeps the facial motion in the optical flow (a crop that follows the face would
cancel it). The box is the median of the detections in the first frames, so one bad frame does
not decide it. Detectors: `haar` (OpenCV's bundled cascade, offline) and `none` (the whole
frame, for pre-cropped copies such as CAS(ME)²'s longVideoFaceCropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import cv2
import numpy as np

from mespot.errors import UserError

DETECTORS = ("haar", "none")
Box = tuple[int, int, int, int]  # x, y, width, height in pixels

HAAR_CASCADE = "haarcascade_frontalface_default.xml"


@cache
def _haar() -> cv2.CascadeClassifier:
    classifier = cv2.CascadeClassifier(cv2.data.haarcascades + HAAR_CASCADE)
    if classifier.empty():
        raise UserError(
            f"OpenCV {cv2.__version__} ships no {HAAR_CASCADE} (OpenCV 5 wheels have none): "
            "install opencv-contrib-python-headless<5, or set face.detector=none"
        )
    return classifier


def detect_face(frames: Sequence[np.ndarray], detector: str) -> Box | None:
    """The median of the largest face found in each grey frame; None when none is found."""
    if detector not in DETECTORS:
        raise UserError(
            f"face.detector={detector!r} is not known; use one of {', '.join(DETECTORS)}"
        )
    if detector == "none":
        h, w = frames[0].shape[:2]
        return (0, 0, w, h)
    boxes = []
    for frame in frames:
        h, w = frame.shape[:2]
        found = _haar().detectMultiScale(frame, 1.1, 5, minSize=(w // 8, h // 8))
        if len(found):
            boxes.append(max(found, key=lambda b: b[2] * b[3]))
    if not boxes:
        return None
    return tuple(int(v) for v in np.median(np.array(boxes), axis=0).round())


def crop_box(face: Box | None, width: int, height: int, margin: float) -> Box:
    """A square around the face, `margin` of its size added on each side, kept inside the frame.

    Without a face: the largest centred square (the caller warns).
    """
    if face is None:
        side = min(width, height)
        return ((width - side) // 2, (height - side) // 2, side, side)
    x, y, w, h = face
    side = min(round(max(w, h) * (1 + 2 * margin)), width, height)
    cx, cy = x + w / 2, y + h / 2
    left = int(np.clip(round(cx - side / 2), 0, width - side))
    top = int(np.clip(round(cy - side / 2), 0, height - side))
    return (left, top, side, side)


def crop(frame: np.ndarray, box: Box, size: int) -> np.ndarray:
    """The box of the frame, resized to size × size."""
    x, y, w, h = box
    return cv2.resize(frame[y : y + h, x : x + w], (size, size), interpolation=cv2.INTER_AREA)
