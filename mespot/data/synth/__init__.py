"""Mock datasets in the official layouts of CAS(ME)², SAMM-LV and CAS(ME)³.

The real datasets are licensed; these stand in for them in tests, the demo and benchmarks. Each
mock has the dataset's file names, sheets, header rows, cell quirks and frame naming, so the
adapters read it exactly as they read the real files, plus `ground_truth.csv` (intervals.csv
schema): what the adapter must read under the default policies. The frames are procedural face
videos (mespot.data.synth.render) in which expressions are real local deformations among blinks,
head motion, lighting changes, sensor noise and JPEG compression.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from rich.progress import Progress

from mespot.data.synth import casme2, casme3, sammlv
from mespot.data.synth.plan import MockVideo, plan_videos
from mespot.data.synth.render import Nuisance, render_video
from mespot.data.tables import INTERVAL_COLUMNS
from mespot.errors import UserError
from mespot.files import atomic_write_text
from mespot.parallel import video_pool

LAYOUTS = {"casme2": casme2, "sammlv": sammlv, "casme3": casme3}


@dataclass(frozen=True)
class MockSpec:
    """Everything that decides a mock dataset; the same spec always gives the same files."""

    dataset: str
    subjects: int = 3
    videos_per_subject: int = 2
    frames: int = 600  # per video
    fps: float | None = None  # None: the dataset's own (30, or 200 for SAMM-LV)
    size: tuple[int, int] = (320, 240)  # width, height
    grey: bool = False
    mae_per_video: int = 2
    me_per_video: int = 2
    blinks_per_minute: float = 12.0
    distractors: float = 1.0  # head motion, lighting and sensor noise × this (0: a still face)
    jpeg_quality: int = 90
    seed: int = 0
    write_frames: bool = True  # False: the workbook alone, as users often start

    def __post_init__(self):
        if self.dataset not in LAYOUTS:
            raise UserError(
                f"data.name={self.dataset!r}: no mock layout; use one of {', '.join(LAYOUTS)}"
            )
        numbers = ("subjects", "videos_per_subject", "frames", "mae_per_video", "me_per_video",
                   "blinks_per_minute", "distractors", "jpeg_quality", "seed")  # fmt: skip
        for name in numbers:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UserError(f"{name}={value}: give a number")
        for name in ("subjects", "videos_per_subject", "frames"):
            if getattr(self, name) < 1:
                raise UserError(f"{name}={getattr(self, name)} must be at least 1")
        if not self.distractors >= 0:
            raise UserError(f"distractors={self.distractors} must not be negative")
        if not 1 <= self.jpeg_quality <= 100:
            raise UserError(f"jpeg_quality={self.jpeg_quality} must lie in 1..100")

    @property
    def frame_rate(self) -> float:
        return float(self.fps or LAYOUTS[self.dataset].FPS)


def write_mock(
    spec: MockSpec, out: str | os.PathLike, *, workers: int = 1, overwrite: bool = False
) -> Path:
    """Write the mock dataset to `out`: built beside it, moved into place when complete."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(
            f"out={out} exists and is not empty; choose another folder or set overwrite=true"
        )
    layout = LAYOUTS[spec.dataset]
    videos = plan_videos(spec, layout)
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)

    truth = layout.write_annotations(partial, videos, np.random.default_rng([spec.seed, 1]))
    table = pd.DataFrame(truth, columns=INTERVAL_COLUMNS)
    atomic_write_text(partial / "ground_truth.csv", table.to_csv(index=False))
    atomic_write_text(partial / "mock.json", json.dumps(asdict(spec), indent=2) + "\n")
    if spec.write_frames:
        _write_all_frames(spec, layout, videos, partial, workers)

    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    return out


def _write_all_frames(spec, layout, videos: list[MockVideo], root: Path, workers: int) -> None:
    jobs = [(spec, layout.__name__, video, root) for video in videos]
    with Progress(transient=False) as progress:
        task = progress.add_task(f"mock {spec.dataset}: rendering videos", total=len(jobs))
        if workers <= 1:
            for job in jobs:
                _write_frames(*job)
                progress.advance(task)
        else:
            with video_pool(workers) as pool:
                for _ in pool.map(_write_frames, *zip(*jobs, strict=True)):
                    progress.advance(task)


def _write_frames(spec: MockSpec, layout_name: str, video: MockVideo, root: Path) -> None:
    layout = LAYOUTS[layout_name.rsplit(".", 1)[-1]]
    params = [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality]
    frames = render_video(
        video.appearance,
        video.events,
        video.n_frames,
        size=tuple(spec.size),
        fps=spec.frame_rate,
        grey=spec.grey,
        nuisance=_nuisance(spec.distractors),
        seed=video.seed,
    )
    for index, frame in enumerate(frames):
        if index in video.dropped:
            continue
        path = layout.frame_path(root, video, index + layout.FIRST_FRAME)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), frame, params):
            raise OSError(f"could not write {path}")


def _nuisance(scale: float) -> Nuisance:
    """The renderer's distractors at `scale` times their default strengths."""
    defaults = Nuisance()
    return Nuisance(**{name: value * scale for name, value in vars(defaults).items()})
