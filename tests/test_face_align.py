"""FaceAligner holds a moving head still, and leaves the face's own motion in the frames."""

import cv2
import numpy as np

from mespot.data.face import FaceAligner
from mespot.data.render import Event, Nuisance, face_box, render_video, sample_appearance

HEAD_ONLY = Nuisance(head_drift=3.0, head_rotation=1.5, illumination=0.0, noise=0.0)
SIZE = (320, 240)


def frames(events=(), n=90, nuisance=HEAD_ONLY):
    appearance = sample_appearance(np.random.default_rng(5))
    video = render_video(appearance, events, n, size=SIZE, grey=True, nuisance=nuisance, seed=2)
    return [f.astype(np.float32) for f in video], face_box(appearance, SIZE)


def inner(image, box, shrink=0.25):
    """The middle of the face box: no hair, no background."""
    x, y, w, h = box
    dx, dy = round(w * shrink), round(h * shrink)
    return image[y + dy : y + h - dy, x + dx : x + w - dx]


def aligned(video, box):
    aligner = FaceAligner(video[0], box)
    return [aligner(f, f) for f in video]


def test_a_drifting_rotating_head_is_held_still():
    video, box = frames()
    still = aligned(video, box)
    before = [np.abs(inner(f - video[0], box)).mean() for f in video[1:]]
    after = [np.abs(inner(f - still[0], box)).mean() for f in still[1:]]
    assert max(before) > 3.0  # the head does move
    assert np.mean(after) < np.mean(before) / 4 and max(after) < max(before) / 3


def test_an_expression_barely_moves_the_fit():
    """A 4 px macro-expression on a still head: the rigid fit, which follows the whole face,
    moves less than 0.25 px anywhere on the face (it must not cancel the expression)."""
    event = Event("mae", 10, 30, 60, ("mouth_corners", "brows"), 4.0, variant=1)
    still_head = Nuisance(head_drift=0.0, head_rotation=0.0, illumination=0.0, noise=0.0)
    video, box = frames((event,), n=31, nuisance=still_head)
    aligner = FaceAligner(video[0], box)
    for frame in video:
        aligner(frame, frame)
    assert np.abs(video[30] - video[0]).max() > 50  # the expression moved the face
    x, y, w, h = box
    corners = np.array([[x, y, 1], [x + w, y, 1], [x, y + h, 1], [x + w, y + h, 1]], np.float32)
    moved = corners @ aligner.source_warp().T - corners[:, :2]
    assert np.abs(moved).max() < 0.25


def test_colour_frames_move_like_their_grey():
    video, box = frames(n=20)
    colour = [cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) for f in video]
    grey_aligner, colour_aligner = FaceAligner(video[0], box), FaceAligner(video[0], box)
    for grey, rgb in zip(video, colour, strict=True):
        expected = grey_aligner(grey, grey)
        got = colour_aligner(rgb, grey)
    assert got.shape == colour[0].shape
    np.testing.assert_allclose(got[..., 1], expected, atol=1e-3)
