"""One face box per video, then the same crop for every frame; optionally the face held still.

A fixed crop keeps the facial motion in the optical flow (a crop that follows the detector's box
would cancel it). The box is the median of the detections in the first frames, so one bad frame
does not decide it. Detectors: `haar` (OpenCV's bundled cascade, offline) and `none` (the whole
frame, for pre-cropped copies such as CAS(ME)²'s longVideoFaceCropped). With
`face.align=stabilise`, `FaceStabiliser` first warps and relights each frame so the face stays
where, and as lit as, it was in the first: the head's motion and the light's changes leave the
flow, the local motion of expressions stays. `FaceWatch` and `FaceCheck` tell which frames of a
recording still show that face inside the crop: mespot-spot spots only there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

import cv2
import numpy as np

from mespot.errors import UserError

DETECTORS = ("haar", "none")
Box = tuple[int, int, int, int]  # x, y, width, height in pixels

HAAR_CASCADE = "haarcascade_frontalface_default.xml"


@cache
def _haar():
    """OpenCV's bundled frontal-face cascade (OpenCV 5 has neither the cascades nor the class)."""
    classifier = None
    if hasattr(cv2, "CascadeClassifier") and hasattr(cv2, "data"):
        classifier = cv2.CascadeClassifier(cv2.data.haarcascades + HAAR_CASCADE)
    if classifier is None or classifier.empty():
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


class FaceCheck:
    """Whether a frame still shows the face found at the start inside the crop (grey or RGB).

    The detector searches only around the crop box, at the found face's scale (SCALES) with the
    face brought down to WORK pixels: ~3 ms a check whatever the frame size, where a search of a
    whole 640×480 frame at every scale takes ~30 ms. A face counts when its centre lies inside
    the crop box: one that moved out of the crop, or out of the frame, is not in what the model
    sees.
    """

    WORK = 64  # the face's side in pixels where the detector looks (Haar finds faces from 24)
    SCALES = (0.6, 1.6)  # of the found face's side: the same person, nearer or farther
    GROW = 0.25  # of the face's side, searched around the crop box (room for a face at its edge)

    def __init__(self, face: Box, box: Box, frame_size: tuple[int, int]):
        side = max(face[2], face[3])
        grow, (width, height) = round(self.GROW * side), frame_size
        x, y, w, h = box
        self.box = box
        self.region = (max(x - grow, 0), max(y - grow, 0),
                       min(x + w + grow, width), min(y + h + grow, height))  # fmt: skip
        self.scale = min(1.0, self.WORK / side)
        self.sizes = [(round(k * side * self.scale),) * 2 for k in self.SCALES]

    def __call__(self, frame: np.ndarray) -> bool:
        left, top, right, bottom = self.region
        region = frame[top:bottom, left:right]
        if region.ndim == 3:
            region = cv2.cvtColor(region, cv2.COLOR_RGB2GRAY)
        if self.scale < 1:
            region = cv2.resize(region, None, fx=self.scale, fy=self.scale,
                                interpolation=cv2.INTER_AREA)  # fmt: skip
        found = _haar().detectMultiScale(region, 1.2, 5, minSize=self.sizes[0],
                                         maxSize=self.sizes[1])  # fmt: skip
        x, y, w, h = self.box
        for bx, by, bw, bh in found:
            cx, cy = left + (bx + bw / 2) / self.scale, top + (by + bh / 2) / self.scale
            if x <= cx < x + w and y <= cy < y + h:
                return True
        return False


class FaceWatch:
    """Which frames of a stream show the face: `check` on every `every`-th frame and on the last,
    and on each frame between two checks that disagree. A span without the face is so found to
    the frame at the cost of one check per `every` frames (plus `every` where a span starts or
    ends); an absence shorter than `every` frames that falls between two checks is not seen.
    """

    def __init__(self, check: Callable[[np.ndarray], bool], every: int):
        self.check, self.every = check, every
        self.between: list[np.ndarray] = []  # the frames since the last check
        self.seen: list[bool] = []  # per frame up to the last check
        self.last: bool | None = None  # the last check's answer

    def see(self, position: int, frame: np.ndarray) -> None:
        """Frame `position` of the stream; a frame that is not the next one (a re-read of an
        earlier frame) is ignored."""
        if position != len(self.seen) + len(self.between):
            return
        if position % self.every:
            self.between.append(frame)
        else:
            self._check(frame)

    def _check(self, frame: np.ndarray) -> None:
        now = self.check(frame)
        if self.last is not None and now != self.last:
            self.seen += [self.check(f) for f in self.between]
        else:
            self.seen += [now] * len(self.between)
        self.seen.append(now)
        self.between.clear()
        self.last = now

    def missing(self) -> list[tuple[int, int]]:
        """[first, last] positions of each span of frames without the face, in order."""
        if self.between:
            self._check(self.between.pop())
        seen = np.array([True, *self.seen, True])
        edges = np.flatnonzero(np.diff(seen.astype(np.int8)))  # starts and ends, alternating
        return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


ALIGNMENTS = ("none", "stabilise")


class FaceStabiliser:
    """Holds the face still and its light steady: each frame is warped and relit onto the first.

    Under a fixed crop the head's drift and turn, and a light that changes, move every pixel
    of the face by as much as a micro-expression moves a few (0.1-0.3 px in a 64-px crop); a
    model trained on a few subjects learns their head motion instead of expressions. Here an
    affine warp plus a lighting plane (gain varying linearly over the face, and an offset) is
    fitted by robust Gauss-Newton to the inside of the face box, against the first frame, at
    `work` pixels across the box: a rigid head is an affine map of the image, and the robust
    weights leave the local motion of expressions and blinks out of the fit. The fit is precise
    to about 0.01 px of a 64-px crop (tests/test_face_align.py), where OpenCV's ECC is off by
    0.1 px: at these sizes the difference decides whether micro-expressions can be seen at all.
    A frame whose fit fails (a face turned away, a cut) keeps the previous fit.
    """

    GROW = 0.1  # the patch is the face box grown by this on each side: room for the head to move

    def __init__(self, reference: np.ndarray, face: Box, work: int = 128, iterations: int = 20):
        x, y, w, h = face
        grow = round(self.GROW * max(w, h))
        self.origin = np.array([x - grow, y - grow], np.float64)
        self.box = (x - grow, y - grow, w + 2 * grow, h + 2 * grow)
        self.scale = max(w, h) / work  # source pixels per patch pixel
        self.size = (round(self.box[2] / self.scale), round(self.box[3] / self.scale))
        self.work, self.iterations = work, iterations
        # patch pixel x sits at source pixel `self.start` + scale·x (pixel centres)
        self.start = self.origin + 0.5 * self.scale - 0.5
        # the inside of the face: an ellipse within the box, clear of hair, ears and background
        mask = np.zeros(self.size[::-1], np.uint8)
        centre = (round((grow + w / 2) / self.scale), round((grow + 0.52 * h) / self.scale))
        axes = (round(0.38 * w / self.scale), round(0.36 * h / self.scale))
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
        ys, xs = np.nonzero(mask)
        self.centre = np.array(centre, np.float32)
        self.xs, self.ys = xs.astype(np.float32), ys.astype(np.float32)
        self.u, self.v = (self.xs - centre[0]) / work, (self.ys - centre[1]) / work
        self.reference = self._patch(reference)[ys, xs]
        self.geometry = np.zeros(6, np.float32)  # displacement t + L (x - centre), patch pixels
        self.light = np.zeros(4, np.float32)  # gain plane g0 + g1 u + g2 v, offset g3

    def _patch(self, grey: np.ndarray) -> np.ndarray:
        """The face box of a frame at work size, lightly smoothed (noise, interpolation bias)."""
        x, y, w, h = self.box
        padded = cv2.copyMakeBorder(grey, max(-y, 0), max(y + h - grey.shape[0], 0),
                                    max(-x, 0), max(x + w - grey.shape[1], 0),
                                    cv2.BORDER_REPLICATE)  # fmt: skip
        region = padded[max(y, 0) : max(y, 0) + h, max(x, 0) : max(x, 0) + w]
        patch = cv2.resize(region, self.size, interpolation=cv2.INTER_AREA).astype(np.float32)
        return cv2.GaussianBlur(patch, (0, 0), 1.0)

    def fit(self, grey: np.ndarray) -> None:
        """Update the warp and the lighting so that this frame matches the first."""
        patch = self._patch(grey)
        gx = cv2.Sobel(patch, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)
        gy = cv2.Sobel(patch, cv2.CV_32F, 0, 1, ksize=1, scale=0.5)
        geometry, light = self.geometry.copy(), self.light.copy()
        dx, dy = self.xs - self.centre[0], self.ys - self.centre[1]
        a, u, v = self.reference, self.u, self.v
        weights = np.ones_like(a)
        for _ in range(self.iterations):
            mx = (self.xs + geometry[0] + geometry[1] * dx + geometry[2] * dy)[:, None]
            my = (self.ys + geometry[3] + geometry[4] * dx + geometry[5] * dy)[:, None]
            b, bx, by = (cv2.remap(image, mx, my, cv2.INTER_LINEAR)[:, 0]
                         for image in (patch, gx, gy))  # fmt: skip
            residual = b - a * (1 + light[0] + light[1] * u + light[2] * v) - light[3]
            jacobian = np.stack([bx, bx * dx, bx * dy, by, by * dx, by * dy, -a, -a * u, -a * v,
                                 -np.ones_like(a)], axis=1)  # fmt: skip
            spread = 1.4826 * np.median(np.abs(residual)) + 1e-6
            weights = 1 / np.maximum(1, np.abs(residual) / (2.5 * spread))  # Huber
            weighted = jacobian * weights[:, None]
            step = np.linalg.lstsq(weighted.T @ jacobian, -weighted.T @ residual, rcond=None)[0]
            geometry += step[:6].astype(np.float32)
            light += step[6:].astype(np.float32)
            if np.abs(step[:6]).max() < 1e-3:
                break
        sane = np.isfinite(geometry).all() and np.isfinite(light).all()
        sane = sane and np.abs(geometry[[0, 3]]).max() < 0.25 * max(self.size)
        sane = sane and np.abs(geometry[[1, 2, 4, 5]]).max() < 0.2 and abs(light[0]) < 0.5
        if sane:
            self.geometry, self.light = geometry, light

    def source_warp(self) -> np.ndarray:
        """The fit in source pixels, 2×3: where the current frame shows each point of the first."""
        t, L = self.geometry[[0, 3]], self.geometry[[1, 2, 4, 5]].reshape(2, 2)
        # in source pixels the displacement at X is scale·t + L (X - start - scale·centre)
        pivot = self.start + self.scale * self.centre
        return np.hstack([np.eye(2) + L, (self.scale * t - L @ pivot)[:, None]]).astype(np.float32)

    def __call__(self, frame: np.ndarray, grey: np.ndarray) -> np.ndarray:
        """`frame` (grey or colour, uint8) with its face where, and lit as, in the first frame."""
        self.fit(grey)
        height, width = frame.shape[:2]
        still = cv2.warpAffine(
            frame.astype(np.float32), self.source_warp(), (width, height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip
        u = ((np.arange(width) - self.start[0]) / self.scale - self.centre[0]) / self.work
        v = ((np.arange(height) - self.start[1]) / self.scale - self.centre[1]) / self.work
        g0, g1, g2, offset = (float(p) for p in self.light)
        gain = np.add.outer(np.float32(g2) * v.astype(np.float32),
                            np.float32(g1) * u.astype(np.float32)) + np.float32(1 + g0)  # fmt: skip
        gain = np.maximum(gain, 0.5)
        if still.ndim == 3:
            gain = gain[..., None]
        return np.clip(np.rint((still - offset) / gain), 0, 255).astype(frame.dtype)
