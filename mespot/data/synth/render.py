"""Deterministic, streaming renderer of synthetic face videos for the mock datasets.

A subject (`Appearance`) is drawn once per video: a head layer (hair, ears, textured skin, eyes,
brows, nose, mouth) over a static background (textured wall, neck, shoulders). Each frame then
only moves that layer: expressions (`Event` "me"/"mae") are smooth local displacement fields,
blinks redraw the eyelids, and the distractors (`Nuisance`) are a slow head pose, lighting drift
and sensor noise. Frames are yielded one at a time, so long videos never sit in memory.

Geometry is in face units (1 = the face width, origin at the face centre, v pointing down)
and converted to pixels once per video.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import cv2
import numpy as np

REGIONS: tuple[str, ...] = ("brows", "eyelids", "mouth_corners", "cheeks", "lips")
KINDS: tuple[str, ...] = ("mae", "me", "blink")
ME_AMPLITUDE = (0.3, 1.0)  # px at a 128-px-wide face: faint, sub-pixel to ~1 px
MAE_AMPLITUDE = (1.5, 4.0)
REFERENCE_FACE_WIDTH = 128.0  # amplitudes and nuisance distances are given for this face width

Colour = tuple[float, float, float]  # BGR, 0-255

# Each region moves in one of a few ways (picked per event): landmark, outward and downward push.
# Outward is away from the face midline, so one entry describes both sides.
_MOTIONS: dict[str, tuple[tuple[tuple[str, float, float], ...], ...]] = {
    "brows": (
        (("brow_inner", 0.0, -1.0), ("brow_mid", 0.0, -1.0), ("brow_outer", 0.0, -0.7)),
        (("brow_inner", -0.7, 0.7), ("brow_mid", -0.3, 0.5)),
        (("brow_inner", 0.0, -1.0), ("brow_mid", 0.0, -0.4)),
    ),
    "eyelids": (
        (("lid_upper", 0.0, -1.0),),
        (("lid_upper", 0.0, 0.6), ("lid_lower", 0.0, -1.0)),
    ),
    "mouth_corners": (
        (("mouth_corner", 0.5, -1.0),),
        (("mouth_corner", 0.1, 1.0),),
        (("mouth_corner", 1.0, 0.0),),
    ),
    "cheeks": (
        (("cheek", 0.0, -1.0),),
        (("cheek", 0.4, -0.8),),
    ),
    "lips": (
        (("lip_upper", 0.0, -1.0),),
        (("lip_lower", 0.0, 1.0),),
        (("lip_upper", 0.0, 0.7), ("lip_lower", 0.0, -0.7)),
    ),
}
_FIELD_CELLS = 64  # displacement-field samples across the face width (upsampled per frame)


@dataclass(frozen=True)
class Appearance:
    """One subject's look. Lengths are in face widths unless noted; colours are BGR 0-255."""

    face_width: float = 0.45  # fraction of the frame's reference width min(W, 4H/3)
    centre: tuple[float, float] = (0.5, 0.55)  # face centre, fractions of frame width and height
    aspect: float = 1.32  # face-oval height / width
    jaw: float = 0.5  # lower-face profile: 0.5 oval, 0.3 square jaw, 0.7 pointed chin
    skin: Colour = (125.0, 160.0, 210.0)
    blotches: float = 0.5  # low-frequency skin-tone unevenness, 0..1
    grain: float = 0.5  # fine pore texture, 0..1
    freckles: float = 0.0  # density, 0..1
    hair: Colour = (35.0, 40.0, 50.0)
    long_hair: bool = False
    brow_darkness: float = 0.8  # brow colour from shaded skin (0) to dark hair (1)
    brow_thickness: float = 0.035
    eye_width: float = 0.2
    eye_spacing: float = 0.45  # between the eye centres
    eye_opening: float = 0.4  # eye aperture height / eye width
    iris: Colour = (50.0, 70.0, 95.0)
    nose_length: float = 0.28  # eye line to nose base
    mouth_width: float = 0.38
    lips: Colour = (95.0, 105.0, 170.0)
    # wall colour at the top and at the bottom of the frame
    background: tuple[Colour, Colour] = ((170.0, 165.0, 160.0), (120.0, 118.0, 115.0))
    shirt: Colour = (120.0, 80.0, 60.0)
    texture_seed: int = 0


@dataclass(frozen=True)
class Event:
    """Something the face does between two frames (0-based, inclusive)."""

    kind: str  # "mae" | "me" | "blink"
    onset: int
    apex: int
    offset: int
    regions: tuple[str, ...]  # REGIONS that move; ignored for "blink"
    amplitude: float  # peak displacement in px at a 128-px face; blinks: peak closure (1 = shut)
    variant: int = 0  # picks how each region moves (e.g. brows up or knitted) and on which side


@dataclass(frozen=True)
class Nuisance:
    """Distractor strengths; 0 turns one off."""

    head_drift: float = 3.0  # slow head translation, px at a 128-px face
    head_rotation: float = 1.5  # in-plane head rotation, degrees
    illumination: float = 0.06  # relative brightness change (global drift and a moving side light)
    noise: float = 1.5  # Gaussian sensor noise sigma, grey levels


# --------------------------------------------------------------------------- sampling


_SKIN_TONES = np.array(
    [(190, 212, 240), (150, 185, 225), (105, 145, 195), (70, 100, 150), (45, 62, 95)], np.float64
)
_HAIR = np.array(
    [(20, 20, 24), (30, 38, 52), (40, 62, 95), (35, 55, 120), (95, 150, 195), (150, 150, 155)],
    np.float64,
)
_IRIS = np.array([(25, 40, 60), (40, 70, 110), (60, 110, 110), (150, 120, 80), (90, 120, 70)])


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """A random subject: shape, skin tone and texture, hair, features, framing and background."""
    skin = _jitter(rng, _palette(_SKIN_TONES, rng.random()), 8)
    return Appearance(
        face_width=rng.uniform(0.35, 0.60),
        centre=(rng.uniform(0.38, 0.62), rng.uniform(0.45, 0.6)),
        aspect=rng.uniform(1.22, 1.45),
        jaw=rng.uniform(0.32, 0.7),
        skin=skin,
        blotches=rng.uniform(0.1, 1.0),
        grain=rng.uniform(0.2, 1.0),
        freckles=0.0 if rng.random() < 0.6 else rng.uniform(0.2, 1.0),
        hair=_jitter(rng, _HAIR[rng.integers(len(_HAIR))], 10),
        long_hair=bool(rng.random() < 0.4),
        brow_darkness=rng.uniform(0.7, 1.0),
        brow_thickness=rng.uniform(0.03, 0.05),
        eye_width=rng.uniform(0.18, 0.24),
        eye_spacing=rng.uniform(0.41, 0.5),
        eye_opening=rng.uniform(0.32, 0.45),
        iris=_jitter(rng, _IRIS[rng.integers(len(_IRIS))], 10),
        nose_length=rng.uniform(0.24, 0.31),
        mouth_width=rng.uniform(0.32, 0.44),
        lips=_jitter(rng, np.array(skin) * (0.72, 0.7, 0.9), 8),
        background=_background_colours(rng, _luminance(skin)),
        shirt=_colour(rng.uniform(30, 200, 3)),
        texture_seed=int(rng.integers(2**31)),
    )


def _palette(stops: np.ndarray, t: float) -> np.ndarray:
    """A colour a fraction t along a list of colour stops."""
    position = t * (len(stops) - 1)
    i = min(int(position), len(stops) - 2)
    return stops[i] + (position - i) * (stops[i + 1] - stops[i])


def _jitter(rng: np.random.Generator, colour: np.ndarray, spread: float) -> Colour:
    """A colour with a little random tint."""
    return _colour(colour + rng.uniform(-spread, spread, 3))


def _colour(values: np.ndarray) -> Colour:
    """A valid colour as plain floats, so Appearance stays hashable and readable."""
    b, g, r = np.clip(values, 0, 255)
    return (float(b), float(g), float(r))


def _luminance(colour: Sequence[float]) -> float:
    b, g, r = colour
    return 0.114 * b + 0.587 * g + 0.299 * r


def _background_colours(rng: np.random.Generator, skin_luminance: float) -> tuple[Colour, Colour]:
    """A wall whose brightness stays well away from the skin's, so the head stands out."""
    candidates = [v for v in range(35, 230, 5) if abs(v - skin_luminance) >= 55]
    level = float(rng.choice(candidates))
    top = level + rng.uniform(-20, 20, 3)
    return _colour(top), _colour(top * rng.uniform(0.75, 1.05))


def expression_event(kind: str, onset: int, offset: int, rng: np.random.Generator) -> Event:
    """An event between onset and offset: apex drawn inside (expressions: usually in the first
    half), 1-3 regions and an amplitude from ME_AMPLITUDE / MAE_AMPLITUDE; blinks close fully."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: expected one of {', '.join(KINDS)}")
    if not 0 <= onset <= offset:
        raise ValueError(f"onset={onset}, offset={offset}: need 0 <= onset <= offset")
    fraction = rng.uniform(0.35, 0.6) if kind == "blink" else rng.beta(2.0, 3.0)
    apex = onset + round(fraction * (offset - onset))
    if offset - onset >= 2:
        apex = min(max(apex, onset + 1), offset - 1)
    if kind == "blink":
        regions, amplitude = ("eyelids",), 1.0
    else:
        count = int(rng.integers(1, 4))
        regions = tuple(str(r) for r in rng.choice(REGIONS, count, replace=False))
        amplitude = rng.uniform(*(ME_AMPLITUDE if kind == "me" else MAE_AMPLITUDE))
    return Event(kind, onset, apex, offset, regions, float(amplitude), int(rng.integers(2**31)))


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Layout:
    """Where the face sits in the frame (pixels) and where its features sit (face units)."""

    cx: float
    cy: float
    w: float  # face width, px
    b: float  # half the face-oval height
    jaw: float
    eye_y: float
    brow_y: float
    nose_y: float
    mouth_y: float

    def rect(self, u0: float, v0: float, u1: float, v1: float) -> tuple[int, int, int, int]:
        """Pixel rectangle (x, y, width, height) covering a face-unit box."""
        x0, y0 = math.floor(self.cx + u0 * self.w), math.floor(self.cy + v0 * self.w)
        x1, y1 = math.ceil(self.cx + u1 * self.w), math.ceil(self.cy + v1 * self.w)
        return x0, y0, x1 - x0, y1 - y0


def _layout(app: Appearance, size: tuple[int, int]) -> _Layout:
    """Face geometry in pixels; the face stays inside the frame from the cheeks to the chin."""
    width, height = size
    w = app.face_width * min(width, 4 * height / 3)
    b = app.aspect / 2
    cx = float(np.clip(app.centre[0] * width, w * 0.55, width - w * 0.55))
    cy = max(min(app.centre[1] * height, height * 0.98 - b * w), height * 0.02 + 0.3 * w)
    eye_y = -0.04
    nose_y = eye_y + app.nose_length
    return _Layout(cx, cy, w, b, app.jaw, eye_y, eye_y - 0.11, nose_y, nose_y + 0.36 * (b - nose_y))


def face_box(
    appearance: Appearance, size: tuple[int, int] = (320, 240)
) -> tuple[int, int, int, int]:
    """Where the face oval (top of the forehead to chin, cheek to cheek) is drawn at rest:
    (x, y, width, height) in pixels, not cut to the frame. Head motion shifts it a little."""
    lay = _layout(appearance, size)
    return lay.rect(-0.5, -lay.b, 0.5, lay.b)


def _landmarks(app: Appearance, lay: _Layout) -> dict[str, tuple[float, float, float]]:
    """Points that expressions push, on the image-right side: name -> (u, v, bump radius)."""
    ex = app.eye_spacing / 2
    aperture = app.eye_width * app.eye_opening
    mw = app.mouth_width / 2
    return {
        "brow_inner": (ex - 0.4 * app.eye_width, lay.brow_y, 0.07),
        "brow_mid": (ex, lay.brow_y - 0.02, 0.07),
        "brow_outer": (ex + 0.5 * app.eye_width, lay.brow_y, 0.07),
        "lid_upper": (ex, lay.eye_y - 0.62 * aperture, 0.06),
        "lid_lower": (ex, lay.eye_y + 0.38 * aperture, 0.05),
        "cheek": (ex + 0.02, lay.nose_y - 0.05, 0.12),
        "mouth_corner": (mw, lay.mouth_y, 0.08),
        "lip_upper": (0.3 * mw, lay.mouth_y - 0.03, 0.07),
        "lip_lower": (0.3 * mw, lay.mouth_y + 0.045, 0.07),
    }


# --------------------------------------------------------------------------- drawing helpers


def _soft(sd, px: float) -> np.ndarray:
    """Coverage of a shape from its signed distance (< 0 inside), anti-aliased over a pixel."""
    return np.clip(0.5 - sd / px, 0.0, 1.0)


def _band(V, top, bottom, px: float) -> np.ndarray:
    """Coverage of each pixel by the region between two curves (top above bottom): exact
    vertical box filtering, so the region fades out cleanly where the curves meet."""
    return np.clip(np.minimum(V + px / 2, bottom) - np.maximum(V - px / 2, top), 0, None) / px


def _implicit_sd(f, fu, fv) -> np.ndarray:
    """Signed distance to the curve f = 0, to first order: f / |grad f|."""
    return f / np.sqrt(fu * fu + fv * fv + 1e-12)


def _ellipse(U, V, cu: float, cv: float, ru: float, rv: float, px: float) -> np.ndarray:
    du, dv = (U - cu) / ru, (V - cv) / rv
    return _soft(_implicit_sd(du * du + dv * dv - 1, 2 * du / ru, 2 * dv / rv), px)


def _gauss(U, V, cu: float, cv: float, su: float, sv: float) -> np.ndarray:
    return np.exp(-0.5 * (((U - cu) / su) ** 2 + ((V - cv) / sv) ** 2))


def _paint(img: np.ndarray, mask, colour) -> None:
    """Cover img with colour where mask is 1, blending where it is fractional."""
    img += (np.asarray(colour, np.float32) - img) * np.asarray(mask, np.float32)[..., None]


def _shade(img: np.ndarray, factor) -> None:
    img *= np.asarray(factor, np.float32)[..., None]


def _noise(rng: np.random.Generator, shape, sigma: float, sigma_y: float | None = None):
    """Unit-variance Gaussian noise smoothed over sigma pixels (sigma_y vertically): texture at a
    chosen scale. Wide blurs run on a grid shrunk to a 2-px blur, then resized: much faster."""
    sigma_y = sigma if sigma_y is None else sigma_y
    shrink_x, shrink_y = max(1.0, sigma / 2), max(1.0, sigma_y / 2)
    small = (math.ceil(shape[0] / shrink_y), math.ceil(shape[1] / shrink_x))
    field = rng.standard_normal(small).astype(np.float32)
    field = cv2.GaussianBlur(
        field, (0, 0), max(sigma / shrink_x, 0.3), sigmaY=max(sigma_y / shrink_y, 0.3)
    )
    if small != tuple(shape):
        field = cv2.resize(field, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return field / (field.std() + 1e-6)


def _grid(lay: _Layout, x0: int, y0: int, shape: tuple[int, int]):
    """Face-unit coordinates of the pixels of a rectangle whose corner is frame pixel (x0, y0)."""
    h, w = shape
    U = ((np.arange(w, dtype=np.float32) + (x0 - lay.cx)) / lay.w)[None, :]
    V = ((np.arange(h, dtype=np.float32) + (y0 - lay.cy)) / lay.w)[:, None]
    return U, V


# --------------------------------------------------------------------------- background


def _draw_background(app: Appearance, lay: _Layout, size, rng: np.random.Generator) -> np.ndarray:
    """The static scene behind the head: textured wall, shoulders and neck."""
    width, height = size
    top, bottom = np.array(app.background, np.float32)
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(top + (bottom - top) * ramp, (height, width, 3)).copy()
    coarse, fine = _noise(rng, (height, width), 0.08 * width), _noise(rng, (height, width), 1.5)
    _shade(img, 1 + 0.07 * coarse + 0.02 * fine)
    U, V = _grid(lay, 0, 0, (height, width))
    px = 1 / lay.w
    shirt = (
        np.array(app.shirt, np.float32) * (0.75 + 0.25 * np.clip(1.2 - np.abs(U), 0, 1))[..., None]
    )
    _paint(img, _ellipse(U, V, 0.0, lay.b + 0.62, 1.1, 0.5, px), shirt)
    neck = _soft(np.maximum(np.abs(U) - 0.19, -V), px)
    _paint(img, neck, np.array(app.skin, np.float32) * 0.7)
    _shade(img, 1 - 0.35 * neck * np.clip(1 - (V - lay.b) / 0.15, 0, 1))
    return img


# --------------------------------------------------------------------------- head


def _head_rect(app: Appearance, lay: _Layout, size) -> tuple[int, int, int, int]:
    """Pixels the head covers, cut to the frame plus a border that head motion may bring in."""
    x0, y0, w, h = lay.rect(-0.68, -lay.b - 0.1, 0.68, lay.b + (0.35 if app.long_hair else 0.06))
    pad = math.ceil(0.1 * lay.w)
    x1, y1 = min(x0 + w, size[0] + pad), min(y0 + h, size[1] + pad)
    x0, y0 = max(x0, -pad), max(y0, -pad)
    return x0, y0, x1 - x0, y1 - y0


def _draw_head(app: Appearance, lay: _Layout, rect, pad: int, rng: np.random.Generator):
    """The head over a frame rectangle grown by pad pixels (left empty, for head motion):
    straight BGR colour, coverage, and the two eyes. Textures do not depend on pad."""
    x0, y0, w, h = rect
    U, V = _grid(lay, x0, y0, (h, w))
    px = 1 / lay.w
    hair = (
        np.array(app.hair, np.float32)
        * (1 + 0.14 * _noise(rng, (h, w), 0.6, 0.05 * lay.w))[..., None]
    )
    img = hair.copy()
    alpha = _hair_mask(app, lay, U, V, px)
    ears = np.maximum(
        *(_ellipse(U, V, s * 0.49, lay.eye_y + 0.12, 0.07, 0.12, px) for s in (-1, 1))
    )
    _paint(img, ears, np.array(app.skin, np.float32) * 0.75)
    face = _soft(_implicit_sd(*_face_profile(lay, U, V)), px)
    skin = face * _soft((lay.brow_y - 0.27 + 0.3 * U**2) - V, 0.012)  # below the hairline
    _paint(img, skin, _skin(app, lay, U, V, rng))
    alpha = np.maximum(np.maximum(alpha, ears), face)
    _draw_sheen(lay, img, U, V, skin)
    _draw_sockets(app, lay, img, U, V)
    _draw_nose(app, lay, img, U, V, px)
    _draw_mouth(app, lay, img, U, V, px)
    _draw_brows(app, lay, img, U, V, px, rng)
    img = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
    alpha = np.pad(alpha, pad)
    eyes = [_make_eye(app, lay, img, side, (x0 - pad, y0 - pad)) for side in (-1, 1)]
    return img, alpha, eyes


def _hair_mask(app: Appearance, lay: _Layout, U, V, px: float) -> np.ndarray:
    mass = _ellipse(U, V, 0.0, -0.08, 0.6, lay.b + 0.05, px)
    if not app.long_hair:
        return mass
    sides = _soft(np.maximum(np.abs(U) - 0.62, np.maximum(-V, V - lay.b - 0.3)), px)
    return np.maximum(mass, sides)


def _face_profile(lay: _Layout, U, V):
    """f < 0 inside the face (an ellipse above the centre, a jaw superellipse below) and grad f."""
    p = np.where(V < 0, np.float32(0.5), np.float32(lay.jaw))
    au = np.abs(U) / 0.5 + 1e-6
    f = au ** (1 / p) + (V / lay.b) ** 2 - 1
    fu = (1 / p) * au ** (1 / p - 1) / 0.5
    return f, fu, 2 * V / lay.b**2


def _skin(app: Appearance, lay: _Layout, U, V, rng: np.random.Generator) -> np.ndarray:
    """Shaded, uneven, grainy skin: round-face shading, blotches, pores, freckles, blush."""
    shape = (V.shape[0], U.shape[1])
    f = _face_profile(lay, U, V)[0]
    shade = 0.58 + 0.42 * np.clip(-f, 0, 1) ** 0.3 - 0.06 * V / lay.b
    tint = np.array([0.7, 0.85, 1.0], np.float32)
    blotches = 0.08 * app.blotches * _noise(rng, shape, 0.05 * lay.w)[..., None] * tint
    grain = 0.07 * app.grain * _noise(rng, shape, 0.6)
    img = np.array(app.skin, np.float32) * (1 + blotches) * (shade * (1 + grain))[..., None]
    for side in (-1, 1):
        blush = 0.12 * _gauss(U, V, side * 0.25, lay.nose_y - 0.04, 0.08, 0.06)
        _paint(img, blush, np.array(app.lips, np.float32) * 1.1)
    dots = _freckles(app, lay, U, V, rng)
    img *= 1 - dots[..., None] * np.array([0.35, 0.3, 0.2], np.float32)
    return img


def _freckles(app: Appearance, lay: _Layout, U, V, rng: np.random.Generator) -> np.ndarray:
    """Small soft dots over the cheeks and nose, 0..1."""
    dots = np.zeros((V.shape[0], U.shape[1]), np.float32)
    count = round(app.freckles * 120)
    cols = np.round((rng.uniform(-0.35, 0.35, count) - U[0, 0]) * lay.w).astype(int)
    rows = np.round((rng.uniform(lay.eye_y + 0.05, lay.nose_y + 0.03, count) - V[0, 0]) * lay.w)
    rows = rows.astype(int)
    inside = (cols >= 0) & (cols < dots.shape[1]) & (rows >= 0) & (rows < dots.shape[0])
    dots[rows[inside], cols[inside]] = rng.uniform(0.4, 1.0, count)[inside]
    sigma = max(0.6, 0.005 * lay.w)
    return np.clip(cv2.GaussianBlur(dots, (0, 0), sigma) * (2 * math.pi * sigma**2), 0, 1)


def _draw_sockets(app: Appearance, lay: _Layout, img: np.ndarray, U, V) -> None:
    """Shadowed eye sockets: the dark eye band that face detectors look for."""
    for side in (-1, 1):
        ex = side * app.eye_spacing / 2
        _shade(img, 1 - 0.45 * _gauss(U, V, ex, lay.eye_y - 0.01, 0.1, 0.055))


def _draw_sheen(lay: _Layout, img: np.ndarray, U, V, skin: np.ndarray) -> None:
    """Light reflected by the forehead, cheekbones, nose and chin. Added, not multiplied, so
    dark skin gets the light-and-shadow pattern of a face too."""
    spots = _gauss(U, V, 0.0, lay.brow_y - 0.13, 0.16, 0.06)
    spots += 0.8 * _gauss(U, V, 0.0, (lay.eye_y + lay.nose_y) / 2, 0.02, 0.08)
    spots += 0.8 * _gauss(U, V, 0.0, lay.nose_y - 0.04, 0.03, 0.025)
    spots += 0.6 * _gauss(U, V, 0.0, lay.mouth_y + 0.14, 0.07, 0.035)
    for side in (-1, 1):
        spots += 0.8 * _gauss(U, V, side * 0.25, lay.nose_y - 0.1, 0.08, 0.05)
    img += (45 * spots * skin)[..., None]


def _draw_nose(app: Appearance, lay: _Layout, img: np.ndarray, U, V, px: float) -> None:
    """A lit bridge and tip between shaded sides, nose wings, nostrils and the shadow below."""
    top, base = lay.eye_y, lay.nose_y
    _shade(img, 1 + 0.1 * _gauss(U, V, 0.0, (top + base) / 2, 0.025, (base - top) / 2.5))
    _shade(img, 1 + 0.08 * _gauss(U, V, 0.0, base - 0.035, 0.035, 0.028))
    _shade(img, 1 - 0.16 * _gauss(U, V, 0.0, base + 0.03, 0.06, 0.014))
    nostril = np.array(app.skin, np.float32) * 0.3
    for side in (-1, 1):
        _shade(img, 1 - 0.14 * _gauss(U, V, side * 0.065, (top + base) / 2 + 0.03, 0.02, 0.07))
        _shade(img, 1 - 0.18 * _gauss(U, V, side * 0.055, base - 0.015, 0.022, 0.018))
        _paint(img, _ellipse(U, V, side * 0.032, base + 0.003, 0.02, 0.009, px), nostril)


def _draw_mouth(app: Appearance, lay: _Layout, img: np.ndarray, U, V, px: float) -> None:
    """Lips (a bowed upper and a fuller, lit lower lip), a dark lip line, shadow under the lip."""
    my, half = lay.mouth_y, app.mouth_width / 2
    x = U / half
    span = np.clip(1 - x * x, 0, 1)
    upper = my - 0.036 * span**0.8 * (1 - 0.3 * np.exp(-((x / 0.18) ** 2)))
    lower = my + 0.05 * span**0.7
    lips = np.array(app.lips, np.float32)
    _paint(img, _band(V, upper, lower, px), lips)
    _shade(img, 1 + 0.12 * _gauss(U, V, 0.0, my + 0.022, 0.08, 0.012))
    line = _soft(np.abs(V - my - 0.003 * x * x) - 0.006 * (0.5 + 0.5 * span), px)
    _paint(img, line * _soft(np.abs(x) - 1.03, px / half), lips * 0.2)
    _shade(img, 1 - 0.25 * _gauss(U, V, 0.0, my + 0.08, 0.09, 0.02))
    for side in (-1, 1):
        _shade(img, 1 - 0.25 * _gauss(U, V, side * half, my, 0.012, 0.01))


def _draw_brows(app: Appearance, lay: _Layout, img: np.ndarray, U, V, px: float, rng) -> None:
    """Arched brows, thick at the inner end, with hair texture."""
    skin = np.array(app.skin, np.float32)
    dark = np.minimum(skin * 0.4, np.array(app.hair, np.float32))
    colour = dark + (1 - app.brow_darkness) * (skin * 0.6 - dark)
    strands = _noise(rng, img.shape[:2], 0.5, 1.5)
    ex, ew = app.eye_spacing / 2, app.eye_width
    inner, outer = ex - 0.55 * ew, ex + 0.62 * ew
    for side in (-1, 1):
        t = (side * U - inner) / (outer - inner)
        tc = np.clip(t, 0, 1)
        centre = lay.brow_y + 0.012 - 0.03 * np.sin(np.pi * tc**0.8)
        half = app.brow_thickness / 2 * (1.15 - 0.7 * tc)
        ends = np.maximum(-t, t - 1) * (outer - inner)
        mask = _soft(np.maximum(np.abs(V - centre) - half, ends), 1.5 * px)
        _paint(img, np.clip(mask * (0.85 + 0.2 * strands), 0, 1), colour)


@dataclass(frozen=True)
class _Eye:
    """One eye's patch of the head, redrawn at any eyelid closure (blinks)."""

    rows: slice
    cols: slice
    base: np.ndarray  # the patch without the eye (skin, socket, lid crease)
    ball: np.ndarray  # sclera, iris, pupil, catchlight
    V: np.ndarray  # (h, 1) face units
    upper: np.ndarray  # (1, w) open upper-lid height, face units
    lower: np.ndarray  # (1, w) lower-lid height
    lash: np.ndarray  # (1, w) half thickness of the lash line
    lash_span: np.ndarray  # (1, w) horizontal coverage of the lash line
    lash_colour: np.ndarray
    px: float
    shadow: float  # depth of the lid's shadow on the eyeball, face units

    def draw(self, closure: float) -> np.ndarray:
        lid = self.upper + closure * (self.lower - self.upper)
        aperture = _band(self.V, lid, self.lower, self.px)
        shadow = 1 - 0.45 * np.exp(-np.clip(self.V - lid, 0, None) / self.shadow)
        img = self.base + (self.ball * shadow[..., None] - self.base) * aperture[..., None]
        lash = _soft(np.abs(self.V - lid + 0.3 * self.lash) - self.lash, self.px)
        _paint(img, 0.92 * lash * self.lash_span, self.lash_colour)
        return img


def _make_eye(app: Appearance, lay: _Layout, img: np.ndarray, side: int, origin) -> _Eye:
    """The eye on one side: its patch of img, the eyeball and the lid curves."""
    ex, ey, a = side * app.eye_spacing / 2, lay.eye_y, app.eye_width / 2
    hu, hl = 0.62 * app.eye_width * app.eye_opening, 0.38 * app.eye_width * app.eye_opening
    x0, y0, w, h = lay.rect(ex - 1.3 * a, ey - hu - 0.04, ex + 1.3 * a, ey + hl + 0.03)
    rows, cols = (
        slice(y0 - origin[1], y0 - origin[1] + h),
        slice(x0 - origin[0], x0 - origin[0] + w),
    )
    U, V = _grid(lay, x0, y0, (h, w))
    px = 1 / lay.w
    x = (U - ex) / a
    span = np.clip(1 - x * x, 0, 1)
    upper, lower = ey - hu * span**0.6, ey + hl * span**0.8
    base = img[rows, cols].copy()
    crease = _soft(np.abs(V - upper + 0.018 + 0.01 * span) - 0.003, 2 * px) * span
    _shade(base, 1 - 0.25 * crease)
    _shade(base, 1 - 0.25 * _soft(np.abs(V - lower - 0.004) - 0.003, 2 * px) * span)
    return _Eye(
        rows=rows,
        cols=cols,
        base=base,
        ball=_eyeball(app, U, V, (ex, ey - 0.1 * hu), a, span, px),
        V=V,
        upper=upper,
        lower=lower,
        lash=0.008 * (0.35 + 0.65 * span),
        lash_span=_soft((np.abs(x) - 1.04) * a, px),
        lash_colour=np.minimum(np.array(app.hair, np.float32), 30) * 0.7,
        px=px,
        shadow=0.3 * hu,
    )


def _eyeball(app: Appearance, U, V, centre, a: float, span, px: float) -> np.ndarray:
    """White, corner-shaded sclera with an iris (dark rim), pupil and catchlight."""
    cu, cv = centre
    r_iris = 0.5 * a
    aa = px / r_iris  # one pixel, in iris radii
    sclera = np.array([190, 198, 205], np.float32) * (0.6 + 0.4 * np.sqrt(span))[..., None]
    img = np.broadcast_to(sclera, (V.shape[0], U.shape[1], 3)).copy()
    r = np.sqrt((U - cu) ** 2 + (V - cv) ** 2) / r_iris
    iris = np.array(app.iris, np.float32) * (1 - 0.5 * np.clip(r, 0, 1) ** 3)[..., None]
    _paint(img, _soft(r - 1, aa), iris)
    _paint(img, _soft(r - 0.45, aa), np.array([12, 12, 14], np.float32))
    spot = np.hypot(U - cu - 0.3 * r_iris, V - cv + 0.35 * r_iris) / r_iris
    _paint(img, _soft(spot - 0.16, aa), np.array([245, 245, 245], np.float32))
    return img


# --------------------------------------------------------------------------- motion


def _profile(event: Event, t: int) -> float:
    """How far along an event is at frame t: 0 outside [onset, offset], 1 at the apex, with
    raised-cosine rise and fall, so motion starts and stops smoothly."""
    if t < event.onset or t > event.offset:
        return 0.0
    if t <= event.apex:
        rise = event.apex - event.onset
        return 1.0 if rise == 0 else 0.5 - 0.5 * math.cos(math.pi * (t - event.onset) / rise)
    return 0.5 + 0.5 * math.cos(math.pi * (t - event.apex) / (event.offset - event.apex))


def _event_field(app: Appearance, lay: _Layout, U, V, event: Event) -> np.ndarray:
    """One expression's displacement on the field grid: compact smooth bumps at the landmarks
    of its regions, scaled so the largest displacement is 1. The event's variant picks the
    motion of each region and whether it is bilateral or one-sided."""
    rng = np.random.default_rng(event.variant)
    marks = _landmarks(app, lay)
    field = np.zeros((V.shape[0], U.shape[1], 2), np.float32)
    for region in event.regions:
        motion = _MOTIONS[region][rng.integers(len(_MOTIONS[region]))]
        sides = (-1, 1) if rng.random() < 0.7 else (int(rng.choice((-1, 1))),)
        for side, (name, outward, down) in ((s, m) for s in sides for m in motion):
            u, v, radius = marks[name]
            bump = np.clip(1 - ((U - side * u) ** 2 + (V - v) ** 2) / radius**2, 0, None) ** 3
            field[..., 0] += side * outward * bump
            field[..., 1] += down * bump
    return field / max(float(np.hypot(field[..., 0], field[..., 1]).max()), 1e-6)


@dataclass(frozen=True)
class _Wave:
    """A smooth random curve in [-1, 1]: a few sinusoids with periods in seconds, so motion
    looks the same at any frame rate."""

    periods: np.ndarray
    phases: np.ndarray
    weights: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, periods=(2.5, 10.0), count: int = 3) -> _Wave:
        return cls(
            rng.uniform(*periods, count),
            rng.uniform(0, 2 * np.pi, count),
            rng.uniform(0.5, 1, count),
        )

    def __call__(self, seconds: float) -> float:
        waves = np.sin(2 * np.pi * seconds / self.periods + self.phases)
        return float(self.weights @ waves / self.weights.sum())


@dataclass(frozen=True)
class _HeadMotion:
    """Slow drift and in-plane rotation of the head about the neck."""

    drift: float  # px
    rotation: float  # radians
    pivot: tuple[float, float]  # frame px
    waves: tuple[_Wave, _Wave, _Wave]  # x, y, angle
    margin: int  # px the head can move at most

    def inverse(self, seconds: float, origin: tuple[int, int]) -> np.ndarray:
        """The 2x3 affine map from frame pixels to head-layer pixels at this time."""
        tx = self.drift * self.waves[0](seconds)
        ty = 0.6 * self.drift * self.waves[1](seconds)
        angle = self.rotation * self.waves[2](seconds)
        c, s = math.cos(angle), math.sin(angle)
        turn_back = np.array([[c, s], [-s, c]])
        px, py = self.pivot
        shift = np.array([px - origin[0], py - origin[1]]) - turn_back @ (px + tx, py + ty)
        return np.hstack([turn_back, shift[:, None]])


def _head_motion(nuisance: Nuisance, lay: _Layout, rng: np.random.Generator) -> _HeadMotion:
    drift = nuisance.head_drift * lay.w / REFERENCE_FACE_WIDTH
    rotation = math.radians(nuisance.head_rotation)
    margin = math.ceil(1.2 * drift + 2.0 * lay.w * rotation) + 2
    pivot = (lay.cx, lay.cy + 1.1 * lay.b * lay.w)
    waves = (_Wave.draw(rng), _Wave.draw(rng), _Wave.draw(rng))
    return _HeadMotion(drift, rotation, pivot, waves, margin)


class _Lighting:
    """Slow global brightness drift and a side light whose direction wanders."""

    def __init__(self, strength: float, shape: tuple[int, ...], rng: np.random.Generator):
        self.strength = strength
        self.level, self.direction = _Wave.draw(rng, (4.0, 15.0)), _Wave.draw(rng, (6.0, 20.0))
        self.start = rng.uniform(0, 2 * np.pi)
        self.x = np.linspace(-1, 1, shape[1], dtype=np.float32)
        self.y = np.linspace(-1, 1, shape[0], dtype=np.float32)
        self.gain = np.empty(shape[:2], np.float32)
        self.gains = np.empty(shape, np.float32) if len(shape) == 3 else self.gain

    def apply(self, frame: np.ndarray, seconds: float) -> None:
        """Multiply frame, in place, by the light at this time."""
        if self.strength == 0:
            return
        angle = self.start + np.pi * self.direction(seconds)
        side = 0.6 * self.strength
        level = 1 + self.strength * self.level(seconds)
        across = np.float32(side * math.cos(angle)) * self.x
        down = np.float32(side * math.sin(angle)) * self.y + np.float32(level)
        np.add.outer(down, across, out=self.gain)
        if self.gains is not self.gain:
            cv2.cvtColor(self.gain, cv2.COLOR_GRAY2BGR, dst=self.gains)
        cv2.multiply(frame, self.gains, dst=frame)


class _Sensor:
    """Adds Gaussian noise and rounds to uint8. Noise comes from random bytes through a table of
    Gaussian quantiles: ten times faster than drawing normals, indistinguishable at 256 levels."""

    def __init__(self, sigma: float, shape: tuple[int, ...], rng: np.random.Generator):
        normal = NormalDist(0.0, 1.0)
        table = [normal.inv_cdf((k + 0.5) / 256) for k in range(256)]
        self.table = np.array(table, np.float32) * np.float32(sigma)
        self.rng = rng
        self.noise = np.empty(shape, np.float32)

    def capture(self, frame: np.ndarray) -> np.ndarray:
        draws = np.frombuffer(self.rng.bytes(frame.size), np.uint8).reshape(frame.shape)
        cv2.LUT(draws, self.table, dst=self.noise)
        return cv2.add(frame, self.noise, dtype=cv2.CV_8U)


class _Timeline:
    """The events under way at each frame, for frames visited in order."""

    def __init__(self, events: Sequence[Event]):
        self._waiting = sorted(events, key=lambda e: e.onset, reverse=True)
        self._current: list[Event] = []

    def at(self, t: int) -> list[tuple[Event, float]]:
        while self._waiting and self._waiting[-1].onset <= t:
            self._current.append(self._waiting.pop())
        self._current = [e for e in self._current if e.offset >= t]
        return [(e, w) for e in self._current if (w := _profile(e, t)) > 0]


# --------------------------------------------------------------------------- scene


class _Scene:
    """A video's static parts (background, head layer) and how a frame is put together from
    them: the head layer warped by the head pose and the expressions, over the background."""

    def __init__(self, app: Appearance, lay: _Layout, size, grey: bool, margin: int):
        self.app, self.lay, self.grey = app, lay, grey
        background = _draw_background(app, lay, size, np.random.default_rng([app.texture_seed, 0]))
        rect = _head_rect(app, lay, size)
        colour, alpha, self.eyes = _draw_head(
            app, lay, rect, margin, np.random.default_rng([app.texture_seed, 1])
        )
        if grey:
            background = cv2.cvtColor(background, cv2.COLOR_BGR2GRAY)
            colour = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)[..., None]
        self.background = background  # (H, W, 3), or (H, W) when grey
        self.layer = np.concatenate([colour * alpha[..., None], alpha[..., None]], axis=2)
        self.origin = (rect[0] - margin, rect[1] - margin)
        self.out = self._reach(self.origin, self.layer.shape, size)
        self.xs = np.arange(self.out[1].start, self.out[1].stop, dtype=np.float32)
        self.ys = np.arange(self.out[0].start, self.out[0].stop, dtype=np.float32)
        self._init_buffers()
        self._init_field_grid(margin)
        self._fields: dict[int, np.ndarray] = {}  # by id() of the events under way
        self.closure = 0.0
        self._draw_eyes(0.0)

    def _init_buffers(self) -> None:
        """Work arrays reused by every frame: allocating frame-sized arrays anew costs more than
        the arithmetic done in them."""
        shape = (self.ys.size, self.xs.size)
        colour = (*shape, 3) if self.background.ndim == 3 else shape
        self._map_x, self._map_y = np.empty(shape, np.float32), np.empty(shape, np.float32)
        self._head = np.empty((*shape, self.layer.shape[2]), np.float32)
        self._cover = np.empty(shape, np.float32)
        self._covers = np.empty(colour, np.float32) if len(colour) == 3 else self._cover
        self._colour = np.empty(colour, np.float32)
        self._frame = np.empty_like(self.background)

    @staticmethod
    def _reach(origin, shape, size) -> tuple[slice, slice]:
        """Frame rows and columns the head layer covers."""
        x0, y0 = max(origin[0], 0), max(origin[1], 0)
        x1, y1 = min(origin[0] + shape[1], size[0]), min(origin[1] + shape[0], size[1])
        return slice(y0, y1), slice(x0, x1)

    def _init_field_grid(self, margin: int) -> None:
        """A coarse grid over the features for displacement fields, and the part of the output
        they can reach."""
        lay = self.lay
        v0, v1 = lay.brow_y - 0.14, lay.mouth_y + 0.14
        self.step = lay.w / _FIELD_CELLS
        n_rows = math.ceil((v1 - v0) * _FIELD_CELLS) + 1
        self.field_u = (-0.5 + np.arange(_FIELD_CELLS + 1, dtype=np.float32) / _FIELD_CELLS)[None]
        self.field_v = (v0 + np.arange(n_rows, dtype=np.float32) / _FIELD_CELLS)[:, None]
        self.field_origin = (
            lay.cx - 0.5 * lay.w - self.origin[0],
            lay.cy + v0 * lay.w - self.origin[1],
        )
        x0, y0, w, h = lay.rect(-0.5, v0, 0.5, v1)
        rows, cols = self.out
        top, left = max(y0 - margin, rows.start), max(x0 - margin, cols.start)
        bottom, right = min(y0 + h + margin, rows.stop), min(x0 + w + margin, cols.stop)
        self.field_out = (
            slice(top - rows.start, max(bottom, top) - rows.start),
            slice(left - cols.start, max(right, left) - cols.start),
        )

    def _draw_eyes(self, closure: float) -> None:
        for eye in self.eyes:
            patch = eye.draw(closure)
            if self.grey:
                patch = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY)[..., None]
            self.layer[eye.rows, eye.cols, :-1] = patch * self.layer[eye.rows, eye.cols, -1:]

    def close_eyes(self, closure: float) -> None:
        if closure != self.closure:
            self.closure = closure
            self._draw_eyes(closure)

    def displacement(self, active: list[tuple[Event, float]]) -> np.ndarray | None:
        """The summed expression displacement (px) on the field grid, None when nothing moves."""
        if not active:
            self._fields = {}
            return None
        fields = {}
        for event, _ in active:
            field = self._fields.get(id(event))
            if field is None:
                field = _event_field(self.app, self.lay, self.field_u, self.field_v, event)
            fields[id(event)] = field
        self._fields = fields
        scale = self.lay.w / REFERENCE_FACE_WIDTH
        return sum(fields[id(e)] * np.float32(e.amplitude * scale * w) for e, w in active)

    def compose(self, inverse: np.ndarray, displacement: np.ndarray | None) -> np.ndarray:
        """One float frame, in a reused buffer: the head layer seen through the head pose and
        the expression warp, over the background."""
        a = inverse.astype(np.float32)
        np.add.outer(a[0, 1] * self.ys + a[0, 2], a[0, 0] * self.xs, out=self._map_x)
        np.add.outer(a[1, 1] * self.ys + a[1, 2], a[1, 0] * self.xs, out=self._map_y)
        if displacement is not None:
            self._displace(inverse, displacement)
        head = cv2.remap(
            self.layer,
            self._map_x,
            self._map_y,
            cv2.INTER_LINEAR,
            dst=self._head,
            borderMode=cv2.BORDER_CONSTANT,
        )
        channels = head.shape[2] - 1
        cv2.extractChannel(head, channels, dst=self._cover)
        np.subtract(1, self._cover, out=self._cover)
        if channels == 3:
            cv2.cvtColor(self._cover, cv2.COLOR_GRAY2BGR, dst=self._covers)
            cv2.cvtColor(head, cv2.COLOR_BGRA2BGR, dst=self._colour)
        else:
            cv2.extractChannel(head, 0, dst=self._colour)
        frame = self._frame
        np.copyto(frame, self.background)
        behind = frame[self.out]
        cv2.multiply(behind, self._covers, dst=behind)
        cv2.add(behind, self._colour, dst=behind)
        return frame

    def _displace(self, inverse: np.ndarray, displacement: np.ndarray) -> None:
        """Move the sampling maps by the expression displacement, carried along with the head."""
        rows, cols = self.field_out
        corner = (self.out[1].start + cols.start, self.out[0].start + rows.start)
        to_grid = inverse.copy()
        to_grid[:, 2] += inverse[:, :2] @ corner - self.field_origin
        moved = cv2.warpAffine(
            displacement,
            to_grid / self.step,
            (cols.stop - cols.start, rows.stop - rows.start),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
        )
        self._map_x[rows, cols] -= moved[..., 0]
        self._map_y[rows, cols] -= moved[..., 1]


# --------------------------------------------------------------------------- video


def render_video(
    appearance: Appearance,
    events: Sequence[Event],
    n_frames: int,
    *,
    size: tuple[int, int] = (320, 240),
    fps: float = 30.0,
    grey: bool = False,
    nuisance: Nuisance = Nuisance(),
    seed: int = 0,
) -> Iterator[np.ndarray]:
    """Yield n_frames uint8 frames one at a time: (H, W, 3) BGR, or (H, W) when grey.

    size is (width, height). The same arguments always give the same frames; seed drives the
    distractors (head motion, lighting, noise), the appearance drives the subject. Arguments
    are checked at once; drawing starts at the first frame requested.
    """
    _check(events, n_frames, size, fps, nuisance)
    return _frames(appearance, tuple(events), n_frames, size, fps, grey, nuisance, seed)


def _check(events: Sequence[Event], n_frames: int, size, fps: float, nuisance: Nuisance) -> None:
    if n_frames < 0:
        raise ValueError(f"n_frames={n_frames} must not be negative")
    if len(size) != 2 or min(size) < 32:
        raise ValueError(f"size={size}: expected (width, height), each at least 32")
    if not fps > 0:
        raise ValueError(f"fps={fps} must be positive")
    if min(vars(nuisance).values()) < 0:
        raise ValueError(f"{nuisance}: strengths must not be negative")
    for event in events:
        if event.kind not in KINDS:
            raise ValueError(f"{event}: kind must be one of {', '.join(KINDS)}")
        if not 0 <= event.onset <= event.apex <= event.offset:
            raise ValueError(f"{event}: need 0 <= onset <= apex <= offset")
        unknown = set(event.regions) - set(REGIONS)
        if event.kind != "blink" and unknown:
            raise ValueError(f"{event}: unknown regions {sorted(unknown)}; known: {REGIONS}")
        if event.amplitude < 0:
            raise ValueError(f"{event}: amplitude must not be negative")


def _frames(app, events, n_frames, size, fps, grey, nuisance, seed) -> Iterator[np.ndarray]:
    lay = _layout(app, size)
    rng = np.random.default_rng([seed, 0])
    motion = _head_motion(nuisance, lay, rng)
    scene = _Scene(app, lay, size, grey, motion.margin)
    lighting = _Lighting(nuisance.illumination, scene.background.shape, rng)
    sensor = _Sensor(nuisance.noise, scene.background.shape, np.random.default_rng([seed, 1]))
    timeline = _Timeline(events)
    for t in range(n_frames):
        active = timeline.at(t)
        blinks = [min(e.amplitude, 1.0) * w for e, w in active if e.kind == "blink"]
        scene.close_eyes(max(blinks, default=0.0))
        displacement = scene.displacement([(e, w) for e, w in active if e.kind != "blink"])
        frame = scene.compose(motion.inverse(t / fps, scene.origin), displacement)
        lighting.apply(frame, t / fps)
        yield sensor.capture(frame)
