"""Preprocessing benchmark: optical-flow speed and accuracy, pipeline throughput, peak memory.

    python -m mespot.bench.preprocess [--quick] [--out DIR]

Writes experiments/bench/preprocess.json (every figure, with date, commit and machine) and
preprocess.md (the tables), and prints the tables. Accuracy is measured against a KNOWN motion:
a rendered face (the 128-px grey crop the cache holds) is warped by a smooth displacement field,
so the flow from the original to the warped frame is known exactly. Pipeline figures run
`mespot-preprocess` on mock datasets from `mespot-synth` in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from mespot.bench import common
from mespot.bench.common import console_script, log, num, peak_rss_run, run, say
from mespot.data.flow import Flow, make_flow
from mespot.data.synth.render import Nuisance, face_box, render_video, sample_appearance
from mespot.parallel import one_thread

SIZE = 128  # the cache's crop size
CASME2_FRAMES = 254_000  # frames in CAS(ME)²'s long videos
WORKSTATION_CORES = 16
GOAL_HOURS = 1.0  # CAS(ME)² preprocessed within an hour on the workstation
SMALL_MOTION = 1.0  # px: below this, motion is as faint as a micro-expression's
SENSOR_NOISE = 1.5  # grey levels: the renderer's default sensor noise, for the noisy EPE
FACE_FILL = 0.7  # face width / crop width: about the pipeline's crop (face box + 20 % margins)
STILL = Nuisance(head_drift=0, head_rotation=0, illumination=0, noise=0)

Pair = tuple[np.ndarray, np.ndarray]


# --------------------------------------------------------------------------- flow settings


@dataclass(frozen=True)
class FlowSetting:
    """One optical-flow configuration under test (params as pairs, so it pickles and hashes)."""

    name: str
    method: str
    params: tuple[tuple[str, float | int | str], ...] = ()

    @property
    def kwargs(self) -> dict:
        return dict(self.params)

    def describe(self) -> str:
        """Params as `k=v …`, or what the empty set means."""
        if not self.params:
            return "OpenCV defaults"
        return " ".join(f"{k}={v}" for k, v in self.params)


def flow_setting(name: str, method: str, **params: float | int | str) -> FlowSetting:
    return FlowSetting(name, method, tuple(params.items()))


# OpenCV's TV-L1 defaults: nscales 5, warps 5, outer 10, inner 30, epsilon 0.01.
SETTINGS: tuple[FlowSetting, ...] = (
    flow_setting("tvl1-default", "tvl1"),
    flow_setting(
        "tvl1-light", "tvl1",
        nscales=3, warps=2, outer_iterations=2, inner_iterations=10, epsilon=0.05,
    ),
    flow_setting(
        "tvl1-mid-a", "tvl1",
        nscales=4, warps=2, outer_iterations=3, inner_iterations=10, epsilon=0.03,
    ),
    flow_setting(
        "tvl1-mid-b", "tvl1",
        nscales=4, warps=3, outer_iterations=4, inner_iterations=15, epsilon=0.03,
    ),
    flow_setting(
        "tvl1-mid-c", "tvl1",
        nscales=4, warps=3, outer_iterations=3, inner_iterations=10, epsilon=0.01,
    ),
    flow_setting(
        "tvl1_torch-mid-a", "tvl1_torch",
        nscales=4, warps=2, outer_iterations=3, inner_iterations=10, epsilon=0.03,
    ),
    flow_setting("dis-medium", "dis", preset="medium"),
    flow_setting("dis-fast", "dis", preset="fast"),
    flow_setting("farneback", "farneback"),
)  # fmt: skip


def pick_settings(names: Sequence[str] | None) -> tuple[FlowSetting, ...]:
    """The named settings, in SETTINGS order; all of them for None."""
    if not names:
        return SETTINGS
    known = {s.name: s for s in SETTINGS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return tuple(s for s in SETTINGS if s.name in names)


# --------------------------------------------------------------------------- known motion


@dataclass(frozen=True)
class Case:
    """Two frames and the exact flow between them (OpenCV's convention, on prev's grid)."""

    prev: np.ndarray  # (H, W) uint8
    next: np.ndarray  # (H, W) uint8
    truth: np.ndarray  # (H, W, 2) float32: prev(x) ≈ next(x + truth(x))
    face: np.ndarray  # (H, W) bool: the face oval, where the error counts


def face_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A still grey face that fills the frame as the pipeline's crop does, and its oval mask."""
    appearance = replace(sample_appearance(rng), face_width=FACE_FILL, centre=(0.5, 0.5))
    frames = render_video(appearance, [], 1, size=(SIZE, SIZE), grey=True, nuisance=STILL)
    image = next(iter(frames))
    return image, oval_mask(face_box(appearance, (SIZE, SIZE)), image.shape)


def oval_mask(box: tuple[int, int, int, int], shape: tuple[int, ...]) -> np.ndarray:
    """The ellipse inscribed in a box, as a boolean mask of the frame."""
    x, y, w, h = box
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32) + 0.5
    return ((xs - x - w / 2) / (w / 2)) ** 2 + ((ys - y - h / 2) / (h / 2)) ** 2 <= 1


def pixel_grid(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """x and y coordinates of every pixel (float64)."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    return xs, ys


@dataclass(frozen=True)
class Motion:
    """A smooth displacement G, defined analytically everywhere (so the truth needs no grid
    interpolation): Gaussian bumps plus a global shift and a rotation about `centre`.
    warp() moves an image by it: out(y) = image(y - G(y))."""

    bumps: tuple[tuple[float, float, float, float, float], ...] = ()  # x, y, sigma, dx, dy
    shift: tuple[float, float] = (0.0, 0.0)  # px
    rotation: float = 0.0  # radians
    centre: tuple[float, float] = (SIZE / 2, SIZE / 2)

    def at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """G at real positions: (..., 2) float64."""
        gx = np.full_like(x, self.shift[0], dtype=np.float64)
        gy = np.full_like(y, self.shift[1], dtype=np.float64)
        for bx, by, sigma, dx, dy in self.bumps:
            weight = np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * sigma**2))
            gx, gy = gx + weight * dx, gy + weight * dy
        cos, sin = math.cos(self.rotation), math.sin(self.rotation)
        rx, ry = x - self.centre[0], y - self.centre[1]
        return np.stack([gx + (cos - 1) * rx - sin * ry, gy + sin * rx + (cos - 1) * ry], -1)


def random_motion(rng: np.random.Generator, face: np.ndarray) -> Motion:
    """3-6 Gaussian bumps of 0.3-3 px (faint, micro-expression-like, up to macro-expression
    size) centred in the face, plus a small global shift (≤ 0.5 px) and rotation (≤ 0.5°), as a
    slight head movement adds."""
    face_y, face_x = np.nonzero(face)
    bumps = []
    for _ in range(int(rng.integers(3, 7))):
        i = int(rng.integers(len(face_x)))
        sigma, amplitude, angle = (
            rng.uniform(5, 14),
            rng.uniform(0.3, 3.0),
            rng.uniform(0, 2 * np.pi),
        )
        dx, dy = amplitude * math.cos(angle), amplitude * math.sin(angle)
        bumps.append((float(face_x[i]), float(face_y[i]), float(sigma), dx, dy))
    shift = tuple(float(v) for v in rng.uniform(-0.5, 0.5, 2))
    rotation = float(np.deg2rad(rng.uniform(-0.5, 0.5)))
    return Motion(tuple(bumps), shift, rotation, (face.shape[1] / 2, face.shape[0] / 2))


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    """Indices folded back into 0..n-1 as OpenCV's BORDER_REFLECT_101 does."""
    period = 2 * n - 2
    index = np.mod(index, period)
    return np.where(index >= n, period - index, index)


def _cubic(d: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel (a = -0.5: third-order accurate)."""
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def sample_bicubic(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The image at real positions, bicubic, borders reflected. Not cv2.remap: it rounds the
    positions to 1/32 px, an error a tenth the size of the EPEs this benchmark compares."""
    x0, y0 = np.floor(x), np.floor(y)
    out = np.zeros(x.shape, np.float64)
    for j in range(-1, 3):
        rows = _reflect((y0 + j).astype(np.int64), image.shape[0])
        wy = _cubic(y - y0 - j)
        for i in range(-1, 3):
            cols = _reflect((x0 + i).astype(np.int64), image.shape[1])
            out += wy * _cubic(x - x0 - i) * image[rows, cols]
    return out


def warp(image: np.ndarray, motion: Motion) -> np.ndarray:
    """The image moved by `motion`, which is given on the OUTPUT grid: out(y) = image(y - G(y))."""
    xs, ys = pixel_grid(image.shape)
    g = motion.at(xs, ys)
    moved = sample_bicubic(image.astype(np.float64), xs - g[..., 0], ys - g[..., 1])
    return np.clip(np.rint(moved), 0, 255).astype(np.uint8)


def forward_flow(motion: Motion, shape: tuple[int, ...], iterations: int = 50) -> np.ndarray:
    """The motion as OpenCV's flow on the ORIGINAL frame's grid: warp() takes out(y) from
    y - G(y), so the flow F at x must send x to that y: F(x) = G(x + F(x)). Solved by
    fixed-point iteration, which converges because G is smooth (|∇G| < 1)."""
    xs, ys = pixel_grid(shape)
    flow = motion.at(xs, ys)
    for _ in range(iterations):
        flow = motion.at(xs + flow[..., 0], ys + flow[..., 1])
    return flow.astype(np.float32)


def make_case(rng: np.random.Generator, translation: tuple[float, float] | None = None) -> Case:
    """A new face moved by a random bump motion, or by a pure translation when given."""
    image, face = face_image(rng)
    motion = random_motion(rng, face) if translation is None else Motion(shift=translation)
    return Case(image, warp(image, motion), forward_flow(motion, image.shape), face)


def add_noise(case: Case, rng: np.random.Generator, sigma: float) -> Case:
    """The same motion seen by a noisy sensor: independent noise on each frame."""

    def noisy(image: np.ndarray) -> np.ndarray:
        values = image + rng.normal(0, sigma, image.shape)
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)

    return replace(case, prev=noisy(case.prev), next=noisy(case.next))


def make_cases(
    count: int, seed: int = 0, translation: tuple[float, float] | None = None
) -> list[Case]:
    """`count` cases, each a different face and field; the same seed gives the same cases."""
    rng = np.random.default_rng(seed)
    return [make_case(rng, translation) for _ in range(count)]


# --------------------------------------------------------------------------- accuracy


def endpoint_error(flow: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per pixel: the distance between the estimated and the true displacement, px."""
    return np.linalg.norm(flow.astype(np.float64) - truth, axis=-1)


def accuracy(setting: FlowSetting, cases: Sequence[Case]) -> dict[str, float]:
    """Mean EPE over the face, and over the face pixels that move less than SMALL_MOTION px;
    each case weighs the same."""
    flow_fn = make_flow(setting.method, setting.kwargs)
    face, small = [], []
    for case in cases:
        error = endpoint_error(flow_fn(case.prev, case.next), case.truth)
        faint = case.face & (np.linalg.norm(case.truth, axis=-1) < SMALL_MOTION)
        face.append(error[case.face].mean())
        if faint.any():
            small.append(error[faint].mean())
    return {
        "epe_face": float(np.mean(face)),
        "epe_small": float(np.mean(small)) if small else None,
    }


def sign_check(shift: tuple[float, float] = (4.0, -3.0)) -> dict:
    """Proof that the benchmark and OpenCV agree on the flow's sign: a large pure translation
    must come back as itself (mean over the face), not as its opposite."""
    case = make_cases(1, seed=12345, translation=shift)[0]
    flow = make_flow("tvl1")(case.prev, case.next)
    measured = [float(v) for v in flow[case.face].mean(axis=0)]
    ok = all(abs(m - s) < 0.5 for m, s in zip(measured, shift, strict=True))
    if not ok:
        raise RuntimeError(f"flow sign check failed: translated by {shift}, measured {measured}")
    return {"translation": list(shift), "measured": measured, "ok": ok}


# --------------------------------------------------------------------------- speed


@contextmanager
def single_thread() -> Iterator[None]:
    """OpenCV and torch on one thread, as each preprocessing worker runs them; restored
    afterwards."""
    import torch

    before = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before[0])
        torch.set_num_threads(before[1])


def one_core_rate(
    setting: FlowSetting, pairs: Sequence[Pair], repeats: int = 1, seconds: float = 0.0
) -> float:
    """Pairs per second in this process on one thread: whole passes over the pairs until at
    least `repeats` passes and `seconds` have gone by (after one warm-up call)."""
    flow_fn = make_flow(setting.method, setting.kwargs)
    with single_thread():
        flow_fn(*pairs[0])
        done, start = 0, time.perf_counter()
        while done < repeats * len(pairs) or time.perf_counter() - start < seconds:
            for prev, nxt in pairs:
                flow_fn(prev, nxt)
            done += len(pairs)
        return done / (time.perf_counter() - start)


_WORKER_PAIRS: list[Pair] = []
_WORKER_FLOWS: dict[FlowSetting, Flow] = {}


def _worker_init(pairs: list[Pair]) -> None:
    """A pool worker: one thread (parallelism comes from processes) and its own pairs."""
    one_thread()
    _WORKER_PAIRS[:] = pairs


def _worker_ready(_: int) -> int:
    """A warm-up task long enough that every worker of the pool is started before timing."""
    time.sleep(0.1)
    return os.getpid()


def _worker_run(setting: FlowSetting, passes: int) -> int:
    """Flow over this worker's pairs `passes` times; the number of pairs done."""
    if setting not in _WORKER_FLOWS:
        _WORKER_FLOWS[setting] = make_flow(setting.method, setting.kwargs)
    flow_fn = _WORKER_FLOWS[setting]
    flow_fn(*_WORKER_PAIRS[0])  # the first call allocates; it runs on the parent's clock: counted
    for _ in range(passes):
        for prev, nxt in _WORKER_PAIRS:
            flow_fn(prev, nxt)
    return passes * len(_WORKER_PAIRS) + 1


@contextmanager
def flow_pool(pairs: Sequence[Pair], workers: int) -> Iterator[ProcessPoolExecutor]:
    """A started pool of `workers` processes, each holding the pairs. Spawned, not forked: a
    fork taken while OpenCV's thread pool is busy can leave a child waiting on a lock forever."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_worker_init, initargs=(list(pairs),)
    ) as pool:
        list(pool.map(_worker_ready, range(2 * workers)))
        yield pool


def all_core_rate(
    pool: ProcessPoolExecutor, workers: int, setting: FlowSetting, passes: int
) -> float:
    """Pairs per second, wall clock, with every worker processing its own pairs at once."""
    start = time.perf_counter()
    done = sum(pool.map(_worker_run, [setting] * workers, [passes] * workers))
    return done / (time.perf_counter() - start)


def passes_for(rate: float, n_pairs: int, seconds: float) -> int:
    """Passes over the pairs that keep a worker busy about `seconds` at a known rate."""
    return max(1, math.ceil(rate * seconds / n_pairs))


# --------------------------------------------------------------------------- flow benchmark


def hours_for_casme2(per_core: float | None) -> float | None:
    """Hours for CAS(ME)²'s frames on the workstation at one core's (or one worker's) frames/s,
    scaled perfectly; None without a rate."""
    if not per_core:
        return None
    return CASME2_FRAMES / (per_core * WORKSTATION_CORES) / 3600


def bench_flow(
    settings: Sequence[FlowSetting] = SETTINGS,
    *,
    fields: int = 8,
    repeats: int = 2,
    seconds: float = 2.0,
    workers: int | None = None,
    seed: int = 0,
    translation: tuple[float, float] | None = None,
    noise: float = SENSOR_NOISE,
    log=None,
) -> list[dict]:
    """Speed on one core and on all cores, EPE (clean and noisy frames) and the CAS(ME)² time,
    one row per setting. Speed is timed on the noisy pairs when there are any: real frames are
    noisy, and noise slows TV-L1 (its iterations stop later), so clean pairs would flatter it."""
    workers = workers or os.cpu_count() or 1
    cases = make_cases(fields, seed, translation)
    rng = np.random.default_rng(seed + 1)
    noisy = [add_noise(c, rng, noise) for c in cases] if noise > 0 else []
    pairs = [(c.prev, c.next) for c in (noisy or cases)]
    rows = []
    for setting in settings:
        say(log, f"flow {setting.name}: one core, accuracy")
        rate = one_core_rate(setting, pairs, repeats, seconds)
        row = {"name": setting.name, "method": setting.method, "params": setting.kwargs}
        row |= {"pairs_per_s_1core": rate, **accuracy(setting, cases)}
        row["epe_face_noisy"] = accuracy(setting, noisy)["epe_face"] if noisy else None
        rows.append(row)
    with flow_pool(pairs, workers) as pool:
        for setting, row in zip(settings, rows, strict=True):
            say(log, f"flow {setting.name}: {workers} cores")
            passes = passes_for(row["pairs_per_s_1core"], len(pairs), seconds)
            row["pairs_per_s_all"] = all_core_rate(pool, workers, setting, passes)
            row["workers"] = workers
            row["scaling"] = row["pairs_per_s_all"] / (row["pairs_per_s_1core"] * workers)
            row["casme2_hours_16core"] = hours_for_casme2(row["pairs_per_s_1core"])
            row["meets_goal"] = row["casme2_hours_16core"] < GOAL_HOURS
    return rows


def verdict(rows: Sequence[dict]) -> dict:
    """Which settings meet the goal, their EPE cost against TV-L1 defaults, and the TV-L1
    setting to make the default: the most accurate one that meets the goal."""
    baseline = next((r for r in rows if r["name"] == "tvl1-default"), None)
    base_epe = baseline["epe_face"] if baseline else None
    meeting = [r for r in rows if r["meets_goal"]]
    costs = {
        r["name"]: (r["epe_face"] - base_epe if base_epe is not None else None) for r in meeting
    }
    tvl1 = [r for r in meeting if r["method"] == "tvl1"]
    best = min(tvl1, key=lambda r: r["epe_face"]) if tvl1 else None
    return {
        "goal": f"CAS(ME)² ({CASME2_FRAMES} frames) in < {GOAL_HOURS:g} h on "
        f"{WORKSTATION_CORES} cores",
        "baseline": "tvl1-default",
        "baseline_epe_face": base_epe,
        "meeting_goal": [r["name"] for r in meeting],
        "epe_cost_vs_baseline": costs,
        "recommended_tvl1": best and {"name": best["name"], "params": best["params"]},
    }


# --------------------------------------------------------------------------- pipeline


@dataclass(frozen=True)
class Mock:
    """A mock dataset to generate: which layout and how big."""

    dataset: str
    subjects: int
    videos: int
    frames: int

    def args(self, out: Path, workers: int) -> list[str]:
        return [
            f"data={self.dataset}",
            f"out={out}",
            f"subjects={self.subjects}",
            f"videos_per_subject={self.videos}",
            f"frames={self.frames}",
            f"workers={workers}",
        ]


def synthesize(mock: Mock, out: Path, workers: int) -> Path:
    """The mock dataset, written with mespot-synth; its root folder."""
    run([console_script("mespot-synth"), *mock.args(out, workers)], out.parent)
    return out


def preprocess_args(dataset: str, root: Path, cache: Path, workers: int, extra=()) -> list[str]:
    """mespot-preprocess's command line: a fresh cache, no progress bar to parse around."""
    return [
        console_script("mespot-preprocess"),
        f"data={dataset}",
        f"data.root={root}",
        f"paths.cache_dir={cache}",
        f"workers={workers}",
        "progress=false",
        *extra,
    ]


def parse_summary(stdout: str) -> dict:
    """Frames, seconds and frames/s from mespot-preprocess's summary line (None when absent)."""
    rate = re.findall(r"([\d.]+)\s*frames/s", stdout)
    counted = re.findall(r"(\d+) frames in ([\d.]+) s", stdout)
    return {
        "frames": int(counted[-1][0]) if counted else None,
        "seconds": float(counted[-1][1]) if counted else None,
        "frames_per_s": float(rate[-1]) if rate else None,
    }


def cached_flow_settings(cache: Path) -> dict | None:
    """The flow method and params the run used, from the cache's settings.json."""
    found = sorted(cache.glob("*/settings.json"))
    if not found:
        return None
    settings = json.loads(found[0].read_text())
    return {"method": settings.get("flow_method"), "params": settings.get("flow_params")}


def pipeline_run(dataset: str, root: Path, cache: Path, workers: int) -> dict:
    """One mespot-preprocess run into a fresh cache: its summary, wall clock and flow settings.
    The cache is deleted afterwards (a few hundred MB per run)."""
    start = time.perf_counter()
    done = run(preprocess_args(dataset, root, cache, workers), root.parent)
    wall = time.perf_counter() - start
    summary = parse_summary(done.stdout)
    frames = summary["frames"]
    flow = cached_flow_settings(cache)
    shutil.rmtree(cache, ignore_errors=True)
    return {
        "workers": workers,
        **summary,
        "wall_seconds": wall,
        "wall_frames_per_s": frames / wall if frames else None,
        "flow": flow,
    }


def best_of(attempts: Sequence[dict]) -> dict:
    """The fastest of repeated runs, with every attempt's frames/s kept beside it."""
    best = common.fastest(attempts, "frames_per_s")
    return {**best, "attempts_frames_per_s": [a["frames_per_s"] for a in attempts]}


def bench_pipeline(
    tmp: Path, mock: Mock, worker_counts: Sequence[int], rounds: int = 1, log=None
) -> dict:
    """Whole-pipeline frames/s on a mock dataset with default settings: for each worker count,
    the best of `rounds` runs."""
    say(log, f"pipeline: mespot-synth {mock.dataset} {mock.subjects}×{mock.videos}×{mock.frames}")
    root = synthesize(mock, tmp / f"{mock.dataset}-pipeline", max(worker_counts))
    runs = []
    for workers in worker_counts:
        attempts = []
        for k in range(rounds):
            say(log, f"pipeline: mespot-preprocess workers={workers} ({k + 1}/{rounds})")
            cache = tmp / f"cache-pipeline-w{workers}-{k}"
            attempts.append(pipeline_run(mock.dataset, root, cache, workers))
        runs.append(best_of(attempts))
    return {"mock": vars(mock), "rounds": rounds, "runs": runs}


def peak_rss(command: Sequence[str], cwd: Path) -> dict:
    """The largest RSS of any process the command starts (itself and its pool workers), and
    the figures of its summary line."""
    peak, stdout = peak_rss_run(command, cwd)
    return {"peak_rss_mb": peak, **parse_summary(stdout)}


def bench_memory(tmp: Path, frame_counts: Sequence[int], fps: int = 30, log=None) -> list[dict]:
    """Peak RSS preprocessing one SAMM-LV-like video (200 fps grey, resampled to `fps`) of each
    length: two lengths show whether memory grows with the video (frames are streamed)."""
    results = []
    for frames in frame_counts:
        mock = Mock("sammlv", 1, 1, frames)
        say(log, f"memory: mespot-synth sammlv 1×1×{frames}, mespot-preprocess fps={fps}")
        root = synthesize(mock, tmp / f"sammlv-{frames}", 2)
        command = preprocess_args("sammlv", root, tmp / f"cache-rss-{frames}", 1, [f"fps={fps}"])
        results.append({"source_frames": frames, "fps": fps, **peak_rss(command, tmp)})
    return results


def pipeline_estimates(pipeline: dict) -> list[dict]:
    """Per-worker frames/s of each run and the CAS(ME)² hours it implies."""
    estimates = []
    for r in pipeline["runs"]:
        per_worker = r["frames_per_s"] / r["workers"] if r["frames_per_s"] else None
        estimates.append(
            {
                "workers": r["workers"],
                "frames_per_s_per_worker": per_worker,
                "casme2_hours_16core": hours_for_casme2(per_worker),
            }
        )
    return estimates


# --------------------------------------------------------------------------- report


def flow_table(rows: Sequence[dict], workers: int) -> list[str]:
    """The flow settings as a markdown table."""
    columns = ("setting", "params", "pairs/s 1 core", f"pairs/s {workers} cores", "EPE face px",
               f"EPE <{SMALL_MOTION:g} px", "EPE noisy px",
               f"CAS(ME)² h, {WORKSTATION_CORES} cores", f"< {GOAL_HOURS:g} h")  # fmt: skip
    cells = [
        (r["name"], FlowSetting(r["name"], r["method"], tuple(r["params"].items())).describe(),
         num(r["pairs_per_s_1core"], 1), num(r["pairs_per_s_all"], 1), num(r["epe_face"], 3),
         num(r["epe_small"], 3), num(r["epe_face_noisy"], 3), num(r["casme2_hours_16core"], 2),
         "yes" if r["meets_goal"] else "no")
        for r in rows
    ]  # fmt: skip
    return common.table(columns, "llrrrrrrc", cells)


def pipeline_table(pipeline: dict, estimates: Sequence[dict]) -> list[str]:
    """The pipeline runs as a markdown table."""
    columns = ("workers", "frames", "s (summary)", "frames/s (summary)", "frames/s (wall)",
               "frames/s per worker", f"CAS(ME)² h, {WORKSTATION_CORES} cores")  # fmt: skip
    cells = [
        (r["workers"], r["frames"], num(r["seconds"], 1), num(r["frames_per_s"], 1),
         num(r["wall_frames_per_s"], 1), num(e["frames_per_s_per_worker"], 1),
         num(e["casme2_hours_16core"], 3))
        for r, e in zip(pipeline["runs"], estimates, strict=True)
    ]  # fmt: skip
    return common.table(columns, "rrrrrrr", cells)


def scaling_line(rows: Sequence[dict], workers: int, load: list[float] | None) -> str:
    """How well the all-core figures scaled: the sign that other work shared the CPUs."""
    efficiency = float(np.median([r["scaling"] for r in rows]))
    return (
        f"All-core efficiency (pairs/s on {workers} cores ÷ ({workers} × 1-core pairs/s)): median "
        f"{efficiency:.0%}; well below 100 % means other work shared the CPUs (load average at "
        f"start: {load})."
    )


def verdict_lines(result: dict) -> list[str]:
    """The goal in words: who meets it, at what EPE cost, and the TV-L1 default to use."""
    v, rows = result["verdict"], {r["name"]: r for r in result["flow"]["rows"]}
    base = rows.get(v["baseline"])
    costs = ", ".join(
        f"{name} ({cost:+.3f} px, {cost / base['epe_face']:+.0%})" if base else name
        for name, cost in v["epe_cost_vs_baseline"].items()
    )
    lines = [
        f"**Goal**: {v['goal']}. Meeting it: {costs or 'none'} "
        f"(face EPE cost vs {v['baseline']}; negative = more accurate)."
    ]
    best = v["recommended_tvl1"]
    if best:
        r = rows[best["name"]]
        params = FlowSetting("", "tvl1", tuple(best["params"].items())).describe()
        lines += ["", f"**Most accurate TV-L1 setting meeting it: {best['name']}** ({params}): "
                  + compare_epe(r, base)]  # fmt: skip
    return lines


def compare_epe(row: dict, base: dict | None) -> str:
    """A setting's three EPEs and its hours, beside the baseline's."""
    keys = (
        ("epe_face", "face"),
        ("epe_small", f"<{SMALL_MOTION:g} px"),
        ("epe_face_noisy", "noisy"),
    )
    parts = [
        f"{label} {num(row[k], 3)}" + (f" vs {num(base[k], 3)}" if base else "")
        for k, label in keys
    ]
    hours = f"{num(row['casme2_hours_16core'], 2)} h"
    if base:
        hours += f" vs {num(base['casme2_hours_16core'], 2)} h"
    return "EPE " + ", ".join(parts) + f" px; {hours}."


def markdown(result: dict) -> str:
    """The report: tables, verdict, memory and how the numbers were made."""
    env, flow = result["environment"], result["flow"]
    out = [
        "# Preprocessing benchmark",
        "",
        common.header(env, f"OpenCV {env['cv2']}", result["quick"]),
        "",
        f"## Optical flow, {SIZE}×{SIZE} grey",
        "",
        *flow_table(flow["rows"], flow["workers"]),
        "",
        f"EPE: mean end-point error against a known smooth motion ({flow['fields']} faces × "
        f"random fields of Gaussian bumps 0.3-3 px + global ≤ 0.5 px / ≤ 0.5°), over the face "
        f"oval; `<{SMALL_MOTION:g} px` over face pixels moving less than that; `noisy` with "
        f"σ = {flow['noise']} grey-level noise on both frames. Speed is timed on the noisy "
        "pairs (noise slows TV-L1), OpenCV on one thread per process. Hours = "
        f"{CASME2_FRAMES} / (1-core pairs/s × {WORKSTATION_CORES}) / 3600.",
        "",
        scaling_line(flow["rows"], flow["workers"], env.get("load_average_at_start")),
        "",
        *verdict_lines(result),
    ]
    out += pipeline_section(result) + memory_section(result)
    out += ["", *common.made_by(result["command"])]
    return "\n".join(out)


def pipeline_section(result: dict) -> list[str]:
    """The pipeline's table, or why it is missing."""
    pipeline = result.get("pipeline")
    if not pipeline:
        return ["", "## Pipeline", "", f"not measured: {result.get('pipeline_skipped')}"]
    mock, rows = pipeline["mock"], result["flow"]["rows"]
    flow = pipeline["runs"][0]["flow"]
    lines = [
        "",
        "## Whole pipeline (mespot-preprocess, default settings)",
        "",
        f"Mock {mock['dataset']}: {mock['subjects']} subjects × {mock['videos']} videos × "
        f"{mock['frames']} frames (mespot-synth default size); flow {flow_label(flow, rows)}. "
        "Summary = the command's own count (after start-up); wall = the whole command; "
        f"best of {pipeline.get('rounds', 1)} run(s) per row.",
        "",
        *pipeline_table(pipeline, result["pipeline_estimates"]),
    ]
    same = matching_row(flow, rows)
    single = next((r for r in pipeline["runs"] if r["workers"] == 1), None)
    if same and single and single["frames_per_s"]:
        lines += [
            "",
            f"One worker does {single['frames_per_s']:.1f} frames/s end to end, while its flow "
            f"alone does {same['pairs_per_s_1core']:.1f} pairs/s on the benchmark's pairs: those "
            "(sensor noise, motions up to 3 px) are harder than consecutive mock frames, so the "
            "flow table's hours are conservative.",
        ]
    return lines


def matching_row(flow: dict | None, rows: Sequence[dict]) -> dict | None:
    """The benchmarked setting a pipeline run's flow equals, if any."""
    if not flow:
        return None
    params = flow.get("params") or {}
    return next((r for r in rows if r["method"] == flow["method"] and r["params"] == params), None)


def flow_label(flow: dict | None, rows: Sequence[dict]) -> str:
    """The flow a pipeline run used, named after the benchmarked setting it equals, if any."""
    if not flow:
        return "unknown"
    text = (
        f"{flow['method']} "
        + FlowSetting("", "", tuple((flow.get("params") or {}).items())).describe()
    )
    same = matching_row(flow, rows)
    return f"{text} (= {same['name']})" if same else text


def memory_section(result: dict) -> list[str]:
    """Peak RSS per video length and how it grows, or nothing when not measured."""
    memory = result.get("memory")
    if not memory:
        return []
    lines = ["", "## Peak memory (largest process, RSS)", ""]
    for m in memory:
        lines.append(
            f"- SAMM-LV mock, 1 video of {m['source_frames']} frames at 200 fps, fps={m['fps']} "
            f"→ {m['frames']} frames, workers=1: **{m['peak_rss_mb']:.0f} MB**"
        )
    growth = rss_growth(memory)
    if growth is not None:
        lines += [
            "",
            f"Growth: {growth:.0f} KB per cached frame; the cached arrays take "
            f"{cached_kb_per_frame():.0f} KB per frame (grey crop + float16 flow). Growth that "
            "matches it is the memory-mapped output's pages, which count in RSS but are "
            "file-backed: the kernel can write them back and drop them.",
        ]
    return lines


def rss_growth(memory: Sequence[dict]) -> float | None:
    """Peak RSS growth in KB per kept frame between the shortest and longest video."""
    short, long = memory[0], memory[-1]
    if len(memory) < 2 or not short["frames"] or not long["frames"]:
        return None
    return (long["peak_rss_mb"] - short["peak_rss_mb"]) * 1024 / (long["frames"] - short["frames"])


def cached_kb_per_frame() -> float:
    """What one frame adds to the cache: the grey crop (uint8) and its flow (2 × float16)."""
    return SIZE * SIZE * (1 + 2 * 2) / 1024


# --------------------------------------------------------------------------- command line


@dataclass(frozen=True)
class Budget:
    """How much work each part gets: the full run and the smoke test differ only here."""

    fields: int
    repeats: int
    seconds: float
    pipeline: Mock
    pipeline_rounds: int  # runs per worker count; the fastest counts
    memory_frames: tuple[int, ...]


FULL = Budget(8, 2, 2.0, Mock("casme2", 2, 2, 600), 2, (1000, 6000))
QUICK = Budget(2, 1, 0.2, Mock("casme2", 1, 2, 150), 1, (1200,))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common.arguments("preprocess", __doc__, quick="a smoke test: tiny budget, < 1 min")
    parser.add_argument("--settings", nargs="+", help="flow settings to run (default: all)")
    parser.add_argument("--no-pipeline", action="store_true", help="flow figures only")
    return parser.parse_args(argv)


def run_pipeline_parts(result: dict, budget: Budget) -> bool:
    """Pipeline throughput and peak memory into result. False when they could not be measured
    (commands missing or failing): the flow figures are still worth writing."""
    missing = [c for c in ("mespot-synth", "mespot-preprocess") if not common.installed(c)]
    if missing:
        result["pipeline_skipped"] = f"{', '.join(missing)} not installed"
        return False
    workers = sorted({1, os.cpu_count() or 1})
    with tempfile.TemporaryDirectory(prefix="mespot-bench-") as tmp:
        try:
            pipeline = bench_pipeline(
                Path(tmp), budget.pipeline, workers, budget.pipeline_rounds, log
            )
            result["pipeline"] = pipeline
            result["pipeline_estimates"] = pipeline_estimates(pipeline)
            result["memory"] = bench_memory(Path(tmp), budget.memory_frames, log=log)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            result["pipeline_skipped"] = f"failed: {e}"
            log(result["pipeline_skipped"])
            return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    budget = QUICK if args.quick else FULL
    start = time.perf_counter()
    result = {"command": common.command_line("preprocess", argv), "quick": args.quick,
              "environment": common.environment("cv2", "numpy")}  # fmt: skip
    result["sign_check"] = sign_check()
    workers = os.cpu_count() or 1
    rows = bench_flow(
        pick_settings(args.settings),
        fields=budget.fields,
        repeats=budget.repeats,
        seconds=budget.seconds,
        workers=workers,
        log=log,
    )
    result["flow"] = {
        "fields": budget.fields,
        "noise": SENSOR_NOISE,
        "workers": workers,
        "size": SIZE,
        "rows": rows,
    }
    result["verdict"] = verdict(rows)
    if args.no_pipeline:
        result["pipeline_skipped"] = "not asked for (--no-pipeline)"
    pipeline_ok = args.no_pipeline or run_pipeline_parts(result, budget)
    common.finish(result, start, common.out_folder(args), "preprocess", markdown)
    print(markdown(result))
    return 0 if pipeline_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
