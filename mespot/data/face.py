"""One face box per video, then the same crop for every frame; optionally the face held still.

A fixed crop keeps the facial motion in the optical flow (a crop that follows the detector's box
would cancel it). The box is the median of the detections in the first frames, so one bad frame
does not decide it. Detectors: `haar` (OpenCV's bundled cascade, offline) and `none` (the whole
frame, for pre-cropped copies such as CAS(ME)²'s longVideoFaceCropped). With `face.align=ecc`,
`FaceAligner` first rotates and shifts each frame so the face stays where it was in the first:
a rigid fit to the whole face removes the head's motion and keeps the local motion of
expressions.
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


ALIGNMENTS = ("none", "ecc")


class FaceAligner:
    """Holds the face still: each frame is rotated and shifted onto the first, so that head drift
    and in-plane rotation leave the crop and the flow keeps the face's own motion.

    The fixed crop alone keeps the head's motion in the flow, where a 0.3 px micro-expression
    competes with a head drifting by pixels. The motion (rotation + shift) is fitted by OpenCV's
    ECC on the detected face box at `work` pixels, starting from the previous frame's fit; the
    rigid fit follows the whole face, so a local expression moves it little. A frame where ECC
    does not converge keeps the previous fit.
    """

    def __init__(self, reference: np.ndarray, face: Box, work: int = 96):
        x, y, w, h = face
        self.face, self.scale = face, max(w, h) / work
        self.size = (round(w / self.scale), round(h / self.scale))
        self.template = self._patch(reference)
        self.warp = np.eye(2, 3, dtype=np.float32)  # patch coordinates: template → frame

    def _patch(self, grey: np.ndarray) -> np.ndarray:
        x, y, w, h = self.face
        patch = cv2.resize(grey[y : y + h, x : x + w], self.size, interpolation=cv2.INTER_AREA)
        return patch.astype(np.float32)

    def __call__(self, frame: np.ndarray, grey: np.ndarray) -> np.ndarray:
        """`frame` (grey or colour) moved so its face lies where the reference's does."""
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
        try:
            _, warp = cv2.findTransformECC(
                self.template, self._patch(grey), self.warp.copy(), cv2.MOTION_EUCLIDEAN,
                criteria, None, 3,
            )  # fmt: skip
            self.warp = warp
        except cv2.error:
            pass
        height, width = frame.shape[:2]
        return cv2.warpAffine(
            frame, self.source_warp(), (width, height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip

    def source_warp(self) -> np.ndarray:
        """The last fit in source pixels: reference point → where the current frame has it."""
        # patch → source: p = origin + scale · q, so the rotation stays and the shift becomes
        # (I − R)·origin + scale · t
        rotation, shift = self.warp[:, :2], self.warp[:, 2]
        origin = np.array(self.face[:2], np.float32)
        return np.hstack([rotation, (origin - rotation @ origin + self.scale * shift)[:, None]])
