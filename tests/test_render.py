"""Synthetic face videos: frames as asked, deterministic, a face OpenCV finds, expressions that
are local, timed and scaled as asked, and distractors that are not expressions."""

import inspect
import itertools

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mespot.data.synth.render import (
    MAE_AMPLITUDE,
    ME_AMPLITUDE,
    REGIONS,
    Appearance,
    Event,
    Nuisance,
    expression_event,
    face_box,
    render_video,
    sample_appearance,
)

SIZE = (320, 240)
STILL = Nuisance(head_drift=0, head_rotation=0, illumination=0, noise=0)
CASCADE = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")


def subject(seed: int) -> Appearance:
    return sample_appearance(np.random.default_rng(seed))


def frames(app: Appearance, events=(), n: int = 1, **options) -> list[np.ndarray]:
    return list(render_video(app, events, n, **options))


def change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel absolute difference, the largest over the colour channels."""
    diff = cv2.absdiff(a, b)
    return diff if diff.ndim == 2 else diff.max(axis=2)


def peak_flow(a: np.ndarray, b: np.ndarray) -> float:
    """Largest optical-flow displacement between two grey frames, in pixels."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(0)
    dis.setPatchSize(8)
    dis.setPatchStride(2)
    flow = dis.calc(a, b, None)
    return float(np.hypot(flow[..., 0], flow[..., 1]).max())


# --------------------------------------------------------------------------- frames


def test_frames_have_the_asked_shape_type_and_count():
    app = subject(0)
    colour = frames(app, n=3, size=(200, 150))
    grey = frames(app, n=2, size=(200, 150), grey=True)
    assert [f.shape for f in colour] == [(150, 200, 3)] * 3
    assert [f.shape for f in grey] == [(150, 200)] * 2
    assert all(f.dtype == np.uint8 for f in colour + grey)
    assert frames(app, n=0) == []


def test_render_video_streams_from_a_generator():
    video = render_video(subject(5), [], 10**6, size=(2040, 1088), grey=True)
    assert inspect.isgenerator(video)
    assert next(video).shape == (1088, 2040)  # a million such frames would never fit in memory
    video.close()


def test_same_arguments_give_the_same_frames():
    app = subject(1)
    events = [Event("me", 2, 4, 6, ("brows",), 0.8), Event("blink", 3, 4, 5, (), 1.0)]
    first, again = frames(app, events, 8, seed=7), frames(app, events, 8, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_the_seed_changes_the_distractors_not_the_subject():
    app, noisy = subject(1), Nuisance(head_drift=0, head_rotation=0, illumination=0, noise=2)
    one, other = frames(app, nuisance=noisy, seed=1)[0], frames(app, nuisance=noisy, seed=2)[0]
    assert not np.array_equal(one, other)
    assert cv2.absdiff(one, other).mean() < 3


@pytest.mark.parametrize(
    "bad",
    [
        {"events": [Event("me", 5, 4, 6, ("brows",), 0.5)]},
        {"events": [Event("me", 1, 2, 3, ("ears",), 0.5)]},
        {"events": [Event("yawn", 1, 2, 3, (), 0.5)]},
        {"n_frames": -1},
        {"size": (20, 20)},
        {"fps": 0.0},
        {"nuisance": Nuisance(noise=-1.0)},
    ],
)
def test_bad_arguments_fail_at_the_call_not_at_the_first_frame(bad):
    options = {"events": [], "n_frames": 3} | bad
    with pytest.raises(ValueError):
        render_video(subject(0), options.pop("events"), options.pop("n_frames"), **options)


# --------------------------------------------------------------------------- subjects


def test_subjects_differ_in_look_size_and_place():
    apps = [subject(seed) for seed in range(40)]
    boxes = np.array([face_box(app, SIZE) for app in apps])
    looks = np.array([frames(app, nuisance=STILL)[0].mean(axis=(0, 1)) for app in apps[:8]])
    skin = np.array([np.dot(app.skin, (0.114, 0.587, 0.299)) for app in apps])
    assert len(set(apps)) == len(apps)
    assert min(np.abs(a - b).max() for a, b in itertools.combinations(looks, 2)) > 1
    assert boxes[:, 2].min() >= 0.34 * SIZE[0] and boxes[:, 2].max() <= 0.61 * SIZE[0]
    assert boxes[:, 2].max() - boxes[:, 2].min() > 0.15 * SIZE[0]
    assert np.ptp(boxes[:, 0] + boxes[:, 2] / 2) > 0.1 * SIZE[0]  # not always centred
    assert skin.max() - skin.min() > 100  # light to dark


@pytest.mark.parametrize("size", [(320, 240), (640, 480)])
def test_opencv_face_detector_finds_the_drawn_face(size):
    found = 0
    for seed in range(20):
        app = subject(seed)
        grey = frames(app, size=size, grey=True, seed=seed)[0]
        x, y, w, h = face_box(app, size)
        for bx, by, bw, bh in CASCADE.detectMultiScale(grey, 1.1, 5):
            inside_x = min(bx + bw, x + w) - max(bx, x)
            inside_y = min(by + bh, y + h) - max(by, y)
            if inside_x > 0 and inside_y > 0 and inside_x * inside_y > 0.5 * bw * bh:
                found += 1
                break
    assert found >= 18


# --------------------------------------------------------------------------- events


def test_an_expression_moves_only_the_face_and_only_between_onset_and_offset():
    app = subject(2)
    event = Event("me", 4, 7, 11, ("brows", "mouth_corners"), 0.8)
    video = frames(app, [event], 14, nuisance=STILL)
    for t in [*range(5), *range(11, 14)]:
        assert np.array_equal(video[t], video[0]), t
    for t in range(5, 11):
        assert not np.array_equal(video[t], video[0]), t
    rows, cols = np.nonzero(change(video[7], video[0]))
    x, y, w, h = face_box(app, SIZE)
    assert x <= cols.min() and cols.max() < x + w
    assert y <= rows.min() and rows.max() < y + h
    assert rows.size < 0.15 * w * h  # local: a small part of the face


def test_expression_displacement_is_sub_pixel_for_me_larger_for_mae_and_scales_with_the_face():
    app = subject(2)

    def neutral_and_apex(kind: str, amplitude: float, size=SIZE):
        event = Event(kind, 1, 4, 8, ("brows", "cheeks"), amplitude)
        video = frames(app, [event], 5, size=size, grey=True, nuisance=STILL)
        return video[0], video[4]

    me, mae = neutral_and_apex("me", 0.6), neutral_and_apex("mae", 3.0)
    assert cv2.absdiff(*mae).mean() > 2 * cv2.absdiff(*me).mean() > 0
    flow_me, flow_mae = peak_flow(*me), peak_flow(*mae)
    assert 0.1 < flow_me < 1.5
    assert flow_mae > 3 * flow_me
    assert 1.5 < peak_flow(*neutral_and_apex("mae", 3.0, (640, 480))) / flow_mae < 2.7


def test_a_blink_changes_the_eyes_only():
    app = subject(4)
    video = frames(app, [Event("blink", 2, 4, 6, (), 1.0)], 8, nuisance=STILL)
    assert np.array_equal(video[1], video[0]) and np.array_equal(video[7], video[0])
    diff = change(video[4], video[0])
    rows, cols = np.nonzero(diff)
    x, y, w, h = face_box(app, SIZE)
    middle = x + w / 2
    assert diff.max() > 60  # the lids cover the eyes
    assert rows.max() - rows.min() < 0.2 * w  # one band, at the eyes: above the nose
    assert y + 0.2 * h < rows.min() and rows.max() < y + h / 2 + 0.05 * w
    assert cols.min() < middle - 0.1 * w and cols.max() > middle + 0.1 * w  # both eyes
    assert not np.any(np.abs(cols - middle) < 0.05 * w)  # not the nose bridge


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(["me", "mae", "blink"]),
    onset=st.integers(0, 20_000),
    length=st.integers(0, 400),
    seed=st.integers(0, 2**32 - 1),
)
def test_expression_event_keeps_the_interval_and_draws_within_the_ranges(kind, onset, length, seed):
    event = expression_event(kind, onset, onset + length, np.random.default_rng(seed))
    assert (event.kind, event.onset, event.offset) == (kind, onset, onset + length)
    assert event.onset <= event.apex <= event.offset
    if length >= 2:
        assert event.onset < event.apex < event.offset
    if kind == "blink":
        assert event.amplitude == 1.0  # the lids close fully
    else:
        low, high = ME_AMPLITUDE if kind == "me" else MAE_AMPLITUDE
        assert low <= event.amplitude <= high
        assert 1 <= len(event.regions) <= 3
        assert len(set(event.regions)) == len(event.regions)
        assert set(event.regions) <= set(REGIONS)


def test_expression_apex_comes_usually_in_the_first_half():
    rng = np.random.default_rng(0)
    apexes = [expression_event("me", 0, 100, rng).apex for _ in range(500)]
    assert np.mean(np.array(apexes) < 50) > 0.6


def test_expression_event_rejects_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        expression_event("smile", 0, 5, rng)
    with pytest.raises(ValueError):
        expression_event("me", 5, 4, rng)


def test_the_named_regions_exist():
    assert {"brows", "eyelids", "mouth_corners", "cheeks"} <= set(REGIONS)
    assert ME_AMPLITUDE[1] < MAE_AMPLITUDE[0]


# --------------------------------------------------------------------------- distractors


def test_distractors_are_timed_in_seconds_not_frames():
    app, quiet = subject(6), Nuisance(noise=0)
    at_30_fps = frames(app, n=31, nuisance=quiet, fps=30.0)[30]
    at_200_fps = next(
        itertools.islice(render_video(app, [], 201, nuisance=quiet, fps=200), 200, None)
    )
    assert np.array_equal(at_30_fps, at_200_fps)  # the same pose and light one second in


def test_distractors_change_frames_slowly():
    video = frames(subject(6), n=91, nuisance=Nuisance(noise=0))
    step = cv2.absdiff(video[1], video[0]).mean()
    apart = np.mean([cv2.absdiff(video[t], video[0]).mean() for t in range(30, 91, 10)])
    assert 0 < step < apart / 5


def test_head_motion_moves_the_whole_head_over_a_still_background():
    app = subject(7)
    moving = Nuisance(head_drift=3, head_rotation=1.5, illumination=0, noise=0)
    video = frames(app, n=61, nuisance=moving)
    diff = change(video[60], video[0])
    x, y, w, h = face_box(app, SIZE)
    cheeks = slice(y + h // 3, y + 2 * h // 3)
    assert diff[cheeks, x - 6 : x + 6].max() > 20  # the face outline moved on both sides,
    assert diff[cheeks, x + w - 6 : x + w + 6].max() > 20  # which an expression never does
    assert diff[:10, :10].max() == 0 and diff[:10, -10:].max() == 0  # the room stays put
