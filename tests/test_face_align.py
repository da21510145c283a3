"""FaceStabiliser holds a moving head still and its light steady, and leaves the face's own
motion in the frames."""

import cv2
import numpy as np
import pytest

from mespot.data.face import FaceStabiliser
from mespot.data.synth.render import Event, Nuisance, face_box, render_video, sample_appearance

STILL = Nuisance(head_drift=0.0, head_rotation=0.0, illumination=0.0, noise=0.0)
HEAD_ONLY = Nuisance(head_drift=3.0, head_rotation=1.5, illumination=0.0, noise=0.0)
SIZE = (320, 240)


def frames(events=(), n=90, nuisance=HEAD_ONLY):
    appearance = sample_appearance(np.random.default_rng(5))
    video = render_video(appearance, events, n, size=SIZE, grey=True, nuisance=nuisance, seed=2)
    return list(video), face_box(appearance, SIZE)


def inner(image, box, shrink=0.25):
    """The middle of the face box (no hair, no background) at a quarter of the size, as the
    crop sees it (each resampling blurs the skin's finest grain a little)."""
    x, y, w, h = box
    dx, dy = round(w * shrink), round(h * shrink)
    middle = image[y + dy : y + h - dy, x + dx : x + w - dx].astype(np.float32)
    return cv2.resize(middle, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)


def corners(box):
    x, y, w, h = box
    return np.array([[x, y, 1], [x + w, y, 1], [x, y + h, 1], [x + w, y + h, 1]], np.float64)


def moved(face, box, angle_deg=1.0, shift=(1.3, -0.7), gain=(1.05, 0.04, -0.03), offset=2.0):
    """The face turned about the box centre and shifted (the 2×3 map from first-frame points
    to where the moved frame shows them), under a light brighter by `gain` (g0 + gx·u + gy·v
    over the box, u and v in box widths from its centre) plus `offset` grey levels."""
    x, y, w, h = box
    centre = (x + w / 2, y + h / 2)
    warp = cv2.getRotationMatrix2D(centre, angle_deg, 1.0)
    warp[:, 2] += shift
    out = cv2.warpAffine(face.astype(np.float32), warp, SIZE, borderMode=cv2.BORDER_REPLICATE)
    u = (np.arange(SIZE[0]) - centre[0]) / max(w, h)
    v = (np.arange(SIZE[1]) - centre[1]) / max(w, h)
    light = gain[0] + gain[1] * u[None, :] + gain[2] * v[:, None]
    return np.clip(out * light + offset, 0, 255).round().astype(np.uint8), warp


def test_a_known_turn_shift_and_light_are_recovered():
    (face,), box = frames(n=1, nuisance=STILL)
    other, warp = moved(face, box)
    stabiliser = FaceStabiliser(face, box)
    still = stabiliser(other, other)
    # where the fit says the first frame's box corners are now: within 0.05 px of the truth
    np.testing.assert_allclose(corners(box) @ stabiliser.source_warp().T, corners(box) @ warp.T,
                               atol=0.05)  # fmt: skip
    # and the frame it gives back looks like the first one, grey level for grey level (two
    # bilinear resamplings alone leave 0.5: undoing the known warp exactly does no better)
    before = np.abs(inner(other, box) - inner(face, box)).mean()
    after = np.abs(inner(still, box) - inner(face, box)).mean()
    assert before > 5 and after < 0.6, (before, after)


def test_a_drifting_rotating_head_in_changing_light_is_held_still():
    video, box = frames(nuisance=Nuisance(head_drift=3.0, head_rotation=1.5, illumination=0.06))
    stabiliser = FaceStabiliser(video[0], box)
    still = [stabiliser(f, f) for f in video]
    before = [np.abs(inner(f, box) - inner(video[0], box)).mean() for f in video[1:]]
    after = [np.abs(inner(f, box) - inner(still[0], box)).mean() for f in still[1:]]
    assert max(before) > 3.0  # the head does move
    # what is left is mostly the sensor noise (σ 1.5 grey levels: mean |difference| ≈ 1.7)
    assert np.mean(after) < 2.0 and max(after) < max(before) / 3, (np.mean(after), max(after))


def test_an_expression_barely_moves_the_fit():
    """A 4 px macro-expression on a still head: the fit, which follows the whole face and
    weighs down what does not fit it, moves less than 0.1 px anywhere on the face box (it
    must not cancel the expression)."""
    event = Event("mae", 10, 30, 60, ("mouth_corners", "brows"), 4.0, variant=1)
    video, box = frames((event,), n=31, nuisance=STILL)
    stabiliser = FaceStabiliser(video[0], box)
    for frame in video:
        still = stabiliser(frame, frame)
    assert np.abs(video[30].astype(np.float32) - video[0]).max() > 50  # the face did move
    shift = corners(box) @ stabiliser.source_warp().T - corners(box)[:, :2]
    assert np.abs(shift).max() < 0.1
    # and the expression is still there after stabilising
    assert np.abs(still.astype(np.float32) - video[0]).max() > 50


def test_a_frame_that_cannot_be_fitted_keeps_the_previous_fit():
    video, box = frames(n=10)
    stabiliser = FaceStabiliser(video[0], box)
    for frame in video:
        stabiliser(frame, frame)
    kept = stabiliser.source_warp()
    noise = np.random.default_rng(0).integers(0, 256, video[0].shape, dtype=np.uint8)
    for junk in (np.zeros_like(video[0]), noise):
        stabiliser(junk, junk)
        np.testing.assert_allclose(stabiliser.source_warp(), kept, atol=1e-6)


@pytest.mark.parametrize("near_edge", [False, True])
def test_colour_frames_move_like_their_grey(near_edge):
    """Colour frames take the grey frame's fit; a face box that reaches past the frame's edge
    works too."""
    video, box = frames(n=20)
    if near_edge:
        box = (box[0] - 60, box[1] - 40, box[2] + 40, box[3] + 40)
    colour = [cv2.cvtColor(f, cv2.COLOR_GRAY2RGB) for f in video]
    grey_stabiliser, colour_stabiliser = (
        FaceStabiliser(video[0], box),
        FaceStabiliser(video[0], box),
    )
    for grey, rgb in zip(video, colour, strict=True):
        expected = grey_stabiliser(grey, grey)
        got = colour_stabiliser(rgb, grey)
    assert got.shape == colour[0].shape and got.dtype == np.uint8
    np.testing.assert_array_equal(got[..., 1], expected)
