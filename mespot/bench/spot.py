"""mespot-spot benchmark: a webcam-like recording through `spot()` end to end, per flow method.

    python -m mespot.bench.spot [--seconds S] [--rounds N] [--methods M ...] [--override K=V]
                                [--quick] [--out DIR]

Renders a 640×480, 30 fps recording of a procedural face (mespot.data.synth.render, as the mock
datasets do) with OpenCV's VideoWriter, builds one checkpoint per flow method at the default CPU
model size (conf/train.yaml with model/backbone=vovnet_small model/neck=small; the flow settings
come from conf/preprocessing/default.yaml) and times `spot()` on the recording with each: a fresh
process per run (its peak RSS is its own) and a fresh output folder (preprocessing really runs).
OpenCV's and torch's threading are left as a user gets them. The weights are untrained: speed
does not depend on their values. Writes experiments/bench/spot.json (every figure, with date,
commit, machine and load) and spot.md (the tables), and prints the tables.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import cv2
import torch
from hydra.utils import instantiate

import mespot
import mespot.spot as spot_module
from mespot.bench import common
from mespot.bench.common import load_average, log, num, plural, say
from mespot.checkpoint import CHECKPOINT_FORMAT
from mespot.cli.common import compose_train
from mespot.cli.preprocess import preprocessing_settings
from mespot.data.datamodule import input_settings
from mespot.data.flow import METHODS
from mespot.data.inputs import InputSpec
from mespot.data.synth import LAYOUTS, MockSpec
from mespot.data.synth.plan import plan_videos
from mespot.data.synth.render import render_video
from mespot.data.windows import window_starts

SIZE = (640, 480)  # width, height: a typical webcam
FPS = 30.0
TARGET = 3.0  # × real time on 2 CPU cores, with the checkpoint's flow method (issue 24's goal)
DEFAULT_METHOD = "tvl1"  # conf/preprocessing/default.yaml's
CPU_METHODS = ("tvl1", "dis", "farneback")  # tvl1_torch is timed on a GPU (mespot.bench.gpu)
MODEL = ("model/backbone=vovnet_small", "model/neck=small")  # the default CPU model size
CODECS = (("mp4v", ".mp4"), ("MJPG", ".avi"))  # the first one this OpenCV can write is used
SECONDS_PER_EXPRESSION = 15  # one MaE and one ME per this many seconds of recording
# spot()'s steps, as mespot.spot calls them: wrapped with a clock in the timed process
STEPS = ("load_spotter", "open_recording", "preprocess_recording", "run_windows",
         "postprocess_video", "apply_threshold", "intervals_table")  # fmt: skip
# the phases reported: what each is, in words
PHASES = {
    "load": "load_spotter: read the checkpoint, build the model",
    "count": "open_recording: decode the whole file once to count its frames",
    "face": "face detection on the probe frames (their decoding included)",
    "flow": "optical flow: the time the frame loop starts it and waits for it (OpenCV's "
    "methods run on every core, one pair per core, beside the decoding)",
    "decode_crop": "decode, crop, resize and write each frame to the cache, while flow runs",
    "spotting": "run_windows: the model over every window, decoding, per-frame scores",
    "postprocess": "NMS per class, threshold, the intervals table",
    "other": "the rest of spot(): cache key, folders, progress bar",
}


# --------------------------------------------------------------------------- recording


def write_recording(
    folder: Path, seconds: float, fps: float = FPS, size: tuple[int, int] = SIZE, seed: int = 0
) -> dict:
    """A recording of one procedural face (blinks, head motion, lighting drift, sensor noise and
    a MaE and a ME per SECONDS_PER_EXPRESSION s) in `folder`; what it is, as a dict."""
    n_frames = max(2, round(seconds * fps))
    expressions = int(seconds // SECONDS_PER_EXPRESSION)
    spec = MockSpec("casme2", 1, 1, n_frames, fps=fps, size=size, mae_per_video=expressions,
                    me_per_video=expressions, seed=seed)  # fmt: skip
    (video,) = plan_videos(spec, LAYOUTS["casme2"])
    start = time.perf_counter()
    path, writer, codec = open_writer(folder, fps, size)
    try:
        frames = render_video(video.appearance, video.events, n_frames, size=size, fps=fps,
                              seed=video.seed)  # fmt: skip
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    kinds = [e.kind for e in video.events]
    return {
        "path": str(path),
        "codec": codec,
        "size": list(size),
        "fps": fps,
        "frames": n_frames,
        "seconds": n_frames / fps,
        "file_mb": path.stat().st_size / 2**20,
        "events": {k: kinds.count(k) for k in ("mae", "me", "blink")},
        "face_width_px": round(video.appearance.face_width * min(size[0], 4 * size[1] / 3)),
        "write_seconds": time.perf_counter() - start,
    }


def open_writer(folder: Path, fps: float, size: tuple[int, int]):
    """(path, an open cv2.VideoWriter, its codec): the first of CODECS this OpenCV can write."""
    for codec, suffix in CODECS:
        path = folder / f"recording{suffix}"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
        if writer.isOpened():
            return path, writer, codec
        writer.release()
    raise RuntimeError(f"this OpenCV can write none of {', '.join(c for c, _ in CODECS)}")


# --------------------------------------------------------------------------- checkpoints


def compose_config(method: str, overrides: Sequence[str] = ()):
    """conf/train.yaml at the default CPU model size with this flow method (its params from
    conf/preprocessing/default.yaml), then any further overrides."""
    return compose_train(["data.root=unused", "data.test_subject=x", *MODEL,
                          f"preprocessing.flow.method={method}", *overrides])  # fmt: skip


def build_checkpoint(method: str, path: Path, overrides: Sequence[str] = ()) -> dict:
    """A dict checkpoint as mespot-train writes it (untrained weights) for this flow method, at
    `path`; what it holds (but the path), as a dict."""
    cfg = compose_config(method, overrides)
    settings = preprocessing_settings(cfg.preprocessing)
    inputs = input_settings(cfg.data)
    colours = 1 if settings.colour == "grey" else 3
    in_chans = InputSpec.of(inputs, colours).channels
    torch.manual_seed(0)
    model = instantiate(cfg.model, in_chans=in_chans, preprocessing=asdict(settings),
                        inputs=inputs, _convert_="all")  # fmt: skip
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "mespot": {"format": CHECKPOINT_FORMAT, "version": mespot.__version__},
        },
        path,
    )
    return {
        "overrides": [*MODEL, f"preprocessing.flow.method={method}", *overrides],
        "preprocessing": asdict(settings),
        "inputs": inputs,
        "in_chans": in_chans,
        "backbone": dict(model.hparams.backbone),
        "neck": dict(model.hparams.neck),
        "params": sum(p.numel() for p in model.parameters()),
    }


# --------------------------------------------------------------------------- one timed run


@contextmanager
def step_clocks(module, names: Sequence[str]) -> Iterator[dict[str, float]]:
    """Seconds spent in each named function of `module` (as the module's own code calls them),
    summed over calls; the originals are put back afterwards."""
    seconds = dict.fromkeys(names, 0.0)
    originals = {name: getattr(module, name) for name in names}

    def clocked(name, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - start

        return wrapper

    for name, function in originals.items():
        setattr(module, name, clocked(name, function))
    try:
        yield seconds
    finally:
        for name, function in originals.items():
            setattr(module, name, function)


def phases_of(total: float, steps: dict[str, float], encode: dict[str, float]) -> dict:
    """spot()'s wall clock split into PHASES: its steps' clocks, with preprocessing split by
    the seconds meta.json records (face, flow, total of encode_video)."""
    phases = {
        "load": steps["load_spotter"],
        "count": steps["open_recording"],
        "face": encode["face"],
        "flow": encode["flow"],
        "decode_crop": encode["total"] - encode["face"] - encode["flow"],
        "spotting": steps["run_windows"],
        "postprocess": sum(
            steps[k] for k in ("postprocess_video", "apply_threshold", "intervals_table")
        ),  # fmt: skip
    }
    phases["other"] = total - sum(phases.values())
    return phases


def time_spot(video: str | Path, ckpt: str | Path, out: str | Path) -> dict:
    """spot() on a recording, timed, into a fresh `out`: wall clock, phases, what came out."""
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    inputs = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]["inputs"]
    load_start = load_average()
    with step_clocks(spot_module, STEPS) as steps:
        start = time.perf_counter()
        result = spot_module.spot(video, ckpt, out, progress=False)
        seconds = time.perf_counter() - start
    load_end = load_average()
    meta = json.loads((result.info.folder / "meta.json").read_text())
    return {
        "seconds": seconds,
        "frames": result.info.n_frames,
        "fps": result.recording.fps,
        "windows": len(window_starts(result.info.n_frames, inputs["window"], inputs["stride"])),
        "window": inputs["window"],
        "intervals": len(result.intervals),
        "face_found": meta["face"]["found"],
        "crop": meta["face"]["crop"],
        "phases": phases_of(seconds, steps, meta["seconds"]),
        "steps": dict(steps),
        "cv2_threads": cv2.getNumThreads(),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": load_start,
        "load_average_end": load_end,
    }


# --------------------------------------------------------------------------- runs and figures


def rates(run: dict) -> dict:
    """What a timed run's clocks give: the recording's length, × real time (recording seconds
    per wall second), frames/s, and the flow's and the model's own rates."""
    phases = run["phases"]
    video_seconds = run["frames"] / run["fps"]
    model_frames = run["windows"] * run["window"]  # short windows are padded to full length
    return {
        "video_seconds": video_seconds,
        "realtime": video_seconds / run["seconds"],
        "frames_per_s": run["frames"] / run["seconds"],
        "preprocessing_seconds": phases["face"] + phases["flow"] + phases["decode_crop"],
        "flow_pairs_per_s": run["frames"] / phases["flow"] if phases["flow"] > 0 else None,
        "model_frames_per_s": model_frames / phases["spotting"] if phases["spotting"] > 0 else None,
    }


def run_in_fresh_process(video: Path, ckpt: Path, out: Path) -> dict:
    """time_spot in a new Python (as a user runs mespot-spot): its figures, the process's whole
    wall clock (start-up and imports included) and its peak RSS (its own, nothing of this
    one). `out` is removed after."""
    start = time.perf_counter()
    peak, run = common.run_child(
        "mespot.bench.spot", ["--child", str(video), str(ckpt), str(out)], out.parent
    )
    process_seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return {**run, **rates(run), "process_seconds": process_seconds, "peak_rss_mb": peak}


ATTEMPT_KEYS = ("seconds", "realtime", "process_seconds", "peak_rss_mb", "load_average_start",
                "load_average_end")  # fmt: skip


def bench_method(
    method: str, recording: dict, tmp: Path, rounds: int, overrides: Sequence[str] = (), log=None
) -> dict:
    """A checkpoint with this flow method, spot() timed `rounds` times (each in a fresh process
    and folder): the fastest run's figures (other work on the machine only slows a run down),
    with every run's time, factor, peak RSS and load beside them."""
    ckpt = tmp / f"{method}.ckpt"
    checkpoint = build_checkpoint(method, ckpt, overrides)
    attempts = []
    for k in range(rounds):
        say(log, f"{method}: spot() on {recording['seconds']:.0f} s of video ({k + 1}/{rounds})")
        run = run_in_fresh_process(Path(recording["path"]), ckpt, tmp / f"out-{method}-{k}")
        say(log, f"{method}: {run['seconds']:.1f} s, {run['realtime']:.2f}× real time, "
                 f"load {run['load_average_end']}")  # fmt: skip
        attempts.append(run)
    best = common.fastest(attempts, "realtime")
    return {
        "method": method,
        "flow_params": checkpoint["preprocessing"]["flow_params"],
        **best,
        "meets_target": best["realtime"] >= TARGET,
        "attempts": [{k: a[k] for k in ATTEMPT_KEYS} for a in attempts],
        "checkpoint": checkpoint,
    }


def shares(row: dict) -> list[dict]:
    """A run's phases, longest first, with their share of its wall clock."""
    phases = sorted(row["phases"].items(), key=lambda kv: -kv[1])
    return [{"phase": k, "seconds": v, "share": v / row["seconds"]} for k, v in phases]


def verdict(rows: Sequence[dict]) -> dict:
    """The target in figures: the default method's factor, who meets it, where the time goes."""
    default = next((r for r in rows if r["method"] == DEFAULT_METHOD), None)
    return {
        "target": f"≥ {TARGET:g}× real time with the checkpoint's flow method "
        f"(default {DEFAULT_METHOD})",
        "default_method": DEFAULT_METHOD,
        "default_realtime": default and default["realtime"],
        "default_meets_target": default and default["meets_target"],
        "meeting_target": [r["method"] for r in rows if r["meets_target"]],
        "default_phases": default and shares(default),
    }


# --------------------------------------------------------------------------- report


def environment() -> dict:
    """What the figures depend on: when, which code, which machine, libraries and threads."""
    env = common.environment("cv2", "torch", "numpy")
    return env | {"cv2_threads": cv2.getNumThreads(), "torch_threads": torch.get_num_threads()}


def load_cell(row: dict) -> str:
    return f"{row['load_average_start']} → {row['load_average_end']}"


MAIN_COLUMNS = ("flow method", "params", "wall s", "× real time", "frames/s", "preprocessing s",
                "flow s (pairs/s)", "spotting s (model frames/s)", "process s", "peak RSS MB",
                "load average start → end", f"≥ {TARGET:g}×")  # fmt: skip


def main_table(rows: Sequence[dict]) -> list[str]:
    """One line per flow method: spot()'s wall clock and what it implies."""
    return common.table(MAIN_COLUMNS, "llrrrrrrrrlc", map(main_cells, rows))


def main_cells(r: dict) -> list[str]:
    params = " ".join(f"{k}={v}" for k, v in r["flow_params"].items()) or "OpenCV defaults"
    return [r["method"], params, num(r["seconds"], 1), f"**{num(r['realtime'], 2)}**",
            num(r["frames_per_s"], 1), num(r["preprocessing_seconds"], 1),
            f"{num(r['phases']['flow'], 1)} ({num(r['flow_pairs_per_s'], 0)})",
            f"{num(r['phases']['spotting'], 1)} ({num(r['model_frames_per_s'], 0)})",
            num(r["process_seconds"], 1), num(r["peak_rss_mb"], 0), load_cell(r),
            "yes" if r["meets_target"] else "no"]  # fmt: skip


def phase_table(rows: Sequence[dict]) -> list[str]:
    """One line per flow method: seconds and share of the wall clock of every phase."""
    cells = [
        [r["method"], *(f"{num(r['phases'][p], 2)} ({r['phases'][p] / r['seconds']:.0%})"
                        for p in PHASES)]
        for r in rows
    ]  # fmt: skip
    return common.table(["flow method", *PHASES], "l" + "r" * len(PHASES), cells)


def attempts_line(rows: Sequence[dict]) -> str:
    """Every run's factor with its load: how much other work on the machine moved them."""
    parts = []
    for r in rows:
        runs = ", ".join(f"{a['realtime']:.2f}× (load {a['load_average_start']} → "
                         f"{a['load_average_end']})" for a in r["attempts"])  # fmt: skip
        parts.append(f"{r['method']}: {runs}")
    return "Every run (the fastest is in the tables): " + "; ".join(parts) + "."


def verdict_lines(result: dict) -> list[str]:
    v = result["verdict"]
    cores = result["environment"]["cpu_count"]
    if v["default_realtime"] is None:
        return [f"**Target** {v['target']} on {cores} CPU cores: {DEFAULT_METHOD} not run."]
    met = "met" if v["default_meets_target"] else "**not met**"
    goes = ", ".join(f"{p['phase']} {p['seconds']:.1f} s ({p['share']:.0%})"
                     for p in v["default_phases"] if p["share"] >= 0.01)  # fmt: skip
    return [
        f"**Target** {v['target']} on {cores} CPU cores: {DEFAULT_METHOD} does "
        f"**{v['default_realtime']:.2f}×**, {met}. Meeting it: "
        f"{', '.join(v['meeting_target']) or 'none'}.",
        "",
        f"Where {DEFAULT_METHOD}'s time goes: {goes}.",
    ]


def markdown(result: dict) -> str:
    """The report: recording, model, the end-to-end table, the phases, the verdict."""
    env, rec, rows = result["environment"], result["recording"], result["rows"]
    libraries = (f"OpenCV {env['cv2']} ({env['cv2_threads']} threads), torch {env['torch']} "
                 f"({env['torch_threads']} threads)")  # fmt: skip
    ckpt = rows[0]["checkpoint"] if rows else None
    out = [
        "# mespot-spot benchmark",
        "",
        common.header(env, libraries, result["quick"]),
        "",
        f"Recording: {rec['size'][0]}×{rec['size'][1]}, {rec['fps']:g} fps, {rec['seconds']:g} s "
        f"({rec['frames']} frames), {rec['codec']} ({rec['file_mb']:.1f} MB), written with "
        f"cv2.VideoWriter: one procedural face about {rec['face_width_px']} px wide "
        f"(mespot.data.synth.render, as in the mock datasets) with {rec['events']['mae']} MaE, "
        f"{rec['events']['me']} ME, {plural(rec['events']['blink'], 'blink')}, head motion, "
        "lighting drift and sensor noise.",
    ]
    if ckpt:
        pre, inputs, neck = ckpt["preprocessing"], ckpt["inputs"], ckpt["neck"]
        out += [
            "",
            f"Checkpoints: conf/train.yaml with {' '.join(MODEL)} (the default CPU model size: "
            f"{ckpt['backbone']['name']} width={ckpt['backbone'].get('width')}, FPN "
            f"level_dims={neck['level_dims']} out_dim={neck['out_dim']}; "
            f"{ckpt['params'] / 1e6:.2f} M parameters), {ckpt['in_chans']} input channels at "
            f"{pre['size']}×{pre['size']}, "
            f"window {inputs['window']}, stride {inputs['stride']}, batch 4 (spot()'s default); "
            f"face detector {pre['detector']}; flow params from conf/preprocessing/default.yaml. "
            "**Untrained weights**: speed does not depend on their values, but an untrained head "
            "scores every point at about its prior, so decoding keeps top_k candidates in every "
            "window: the post-processing figure is an upper bound.",
        ]
    out += [
        "",
        f"## spot() end to end (fastest of {result['budget']['rounds']} run(s), each in a fresh "
        "process and output folder)",
        "",
        *main_table(rows),
        "",
        "× real time = recording seconds ÷ wall seconds of spot() (model loading, reading the "
        "video, preprocessing, spotting, post-processing; not Python's start-up and imports). "
        "frames/s = frames ÷ wall seconds; flow pairs/s = frames ÷ flow seconds (the seconds "
        "preprocessing waited for the flow, which runs beside the decoding); model frames/s "
        "= windows × window ÷ spotting seconds (stride < window: every frame is seen "
        f"{rows[0]['windows'] * rows[0]['window'] / rows[0]['frames']:.1f}× here). Process s = "
        "the timed process's whole wall clock, Python's start-up and imports included, as "
        "`mespot-spot` adds them (not its writing of the outputs and the timeline plot). Peak "
        "RSS: that process's largest resident size, mostly imports (~0.9 GB) and the backbone's "
        "activations for one batch (batch × window frames at once; a recording shorter than "
        "batch windows makes a smaller batch); the memory-mapped cache pages it reads count too, "
        "but are file-backed."
        if rows
        else "no method run",
        "",
        "## Where the time goes (s, share of wall clock)",
        "",
        *phase_table(rows),
        "",
        *(f"- {name}: {text}" for name, text in PHASES.items()),
        "",
        "face, flow and decode_crop are preprocessing's own clocks (meta.json `seconds`); the "
        "other phases are spot()'s steps, clocked in the timed process.",
        "",
        *verdict_lines(result),
        "",
        attempts_line(rows),
        "",
        *common.made_by(result["command"]),
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- command line

FULL = {"seconds": 60.0, "rounds": 2}
QUICK = {"seconds": 5.0, "rounds": 1}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common.arguments("spot", __doc__, quick="a smoke test: 5 s, one run each")
    parser.add_argument(
        "--seconds", type=float, help=f"recording length (default {FULL['seconds']:g})"
    )
    parser.add_argument("--rounds", type=int, help=f"runs per method, the fastest counts "
                        f"(default {FULL['rounds']})")  # fmt: skip
    parser.add_argument("--methods", nargs="+", choices=METHODS,
                        help=f"flow methods (default: {' '.join(CPU_METHODS)})")  # fmt: skip
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a further Hydra override of the checkpoints' config, e.g. "
                        "preprocessing.size=64 (repeatable)")  # fmt: skip
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # video ckpt out: one run
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return common.answer_parent(time_spot(*args.child))
    budget = QUICK if args.quick else FULL
    budget = {
        "seconds": args.seconds or budget["seconds"],
        "rounds": args.rounds or budget["rounds"],
        "methods": list(args.methods or CPU_METHODS),
        "overrides": list(args.override),
    }
    start = time.perf_counter()
    result = {"command": common.command_line("spot", argv), "quick": args.quick,
              "environment": environment(), "budget": budget}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mespot-bench-spot-") as tmp:
        log(f"recording: {budget['seconds']:g} s at {FPS:g} fps, {SIZE[0]}×{SIZE[1]}")
        recording = write_recording(Path(tmp), budget["seconds"])
        rows = [bench_method(m, recording, Path(tmp), budget["rounds"], budget["overrides"], log)
                for m in budget["methods"]]  # fmt: skip
    result["recording"] = {k: v for k, v in recording.items() if k != "path"}
    result["rows"] = rows
    result["verdict"] = verdict(rows)
    common.finish(result, start, common.out_folder(args), "spot", markdown)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
