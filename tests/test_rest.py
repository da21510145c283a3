"""RestFace: each frame's distance from the face at rest, through a whole expression."""

import numpy as np
import pytest

from mespot.data.rest import RestFace, centred


def video(length=600, size=32, hold=(200, 300), seed=0):
    """uint8 grey frames of a noisy still face whose block at rows 8-15, columns 16-23 brightens
    by 30 grey levels from frame hold[0] to hold[1], under a light that rises by 40 levels over
    the video."""
    rng = np.random.default_rng(seed)
    frames = 100 + rng.normal(0, 1.0, (length, size, size))
    frames[hold[0] : hold[1], 8:16, 16:24] += 30
    frames += np.linspace(0, 40, length)[:, None, None]
    return frames.round().clip(0, 255).astype(np.uint8)


def block_distance(frames, rest):
    distance = rest.distance(frames, np.arange(len(frames)))
    return np.abs(distance[:, 8:16, 16:24]).mean(axis=(1, 2)) * 255, np.abs(distance) * 255


def test_a_long_expression_stays_away_from_the_face_at_rest_from_onset_to_offset():
    """An expression of 100 frames fills most of a 128-frame window, so that window's own median
    frame would be the expression; the median of the 300 frames around each frame is the face at
    rest, and the light's rise is taken out with each frame's mean."""
    frames = video()
    inside, everywhere = block_distance(frames, RestFace(frames, span=300))
    assert inside[200:300].min() > 20  # ~30 levels less the frame's mean shift
    assert inside[:195].max() < 4 and inside[305:].max() < 4
    outside = np.delete(everywhere, np.s_[200:300], axis=0)
    assert np.percentile(outside, 99) < 4  # noise, not the light


def test_the_face_at_rest_follows_a_slow_change_between_medians():
    """A block that darkens slowly over the whole video (a shadow creeping in) is the face at
    rest at every moment: interpolated between medians, its distance stays near the noise
    (within half a span of either end, where the median sees one side only, it lags)."""
    frames = video(hold=(0, 0)).astype(np.float64)
    frames[:, 0:8, 0:8] -= np.linspace(0, 60, len(frames))[:, None, None]
    frames = frames.round().clip(0, 255).astype(np.uint8)
    _, everywhere = block_distance(frames, RestFace(frames, span=200))
    shadow = np.abs(everywhere[:, 0:8, 0:8]).mean(axis=(1, 2))
    assert shadow[100:-100].max() < 1.5  # noise: ~0.8
    assert shadow.max() < 6  # 100 frames of a creep by 0.1 a frame, seen from one side


@pytest.mark.parametrize("shape", [(50, 16, 16), (50, 16, 16, 3)])
def test_short_videos_and_colour_frames_keep_their_shape(shape):
    frames = np.random.default_rng(1).integers(0, 255, shape, dtype=np.uint8)
    rest = RestFace(frames, span=300)  # longer than the video: one median of all of it
    positions = np.array([0, 10, 49])
    distance = rest.distance(frames[positions], positions)
    assert distance.shape == (3, *shape[1:]) and distance.dtype == np.float32
    expected = centred(frames[positions]) - np.median(centred(frames[::4]), axis=0)
    np.testing.assert_allclose(distance, expected, atol=2e-3)  # float16 medians


def test_the_distance_is_the_linear_mix_of_the_two_medians_around_each_frame_value_for_value():
    """Windows across median boundaries and at the video's end: each frame's face at rest is
    (1 − w)·median[k] + w·median[k + 1] of the float16 medians, in float32, to the bit (the
    values the accuracy benchmark's recorded numbers were made with)."""
    frames = video(length=700)
    rest = RestFace(frames, span=120)  # a median every 30 frames
    for start in (0, 25, 64, 600):
        positions = np.arange(start, min(start + 128, len(frames)))
        where = positions / rest.step
        below = np.minimum(where.astype(np.int64), len(rest.medians) - 1)
        above = np.minimum(below + 1, len(rest.medians) - 1)
        weight = (where - below).clip(0, 1).astype(np.float32)[:, None, None]
        face = (1 - weight) * rest.medians[below] + weight * rest.medians[above]
        expected = centred(frames[positions]) - face
        np.testing.assert_array_equal(rest.distance(frames[positions], positions), expected)
