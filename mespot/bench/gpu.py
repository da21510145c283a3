"""GPU check: the paper's spotter at its own size on one CUDA GPU, end to end, in one command.

    make gpu-check                     # python -m mespot.bench.gpu [--profile gpu|cpu] [--out DIR]

With a CUDA GPU (sized for one GPU and ~16 cores: about 7 minutes) it makes the accuracy
benchmark's mock CAS(ME)² and preprocesses it with every core (TV-L1 in torch on the GPU), times
that flow and checks it against known motion, runs every LOSO fold of `experiment=paper` and of
the accuracy recipe at paper size (full-width VoVNet, paper FPN, 128 px), all folds of a sweep
at once on the one GPU, and times `mespot-spot` on a 60-s 640×480 recording. It records
training and inference frames/s, how busy the GPU is (nvidia-smi, sampled every 100 ms) and how
long training waits for data (mespot.callbacks.Throughput), peak GPU memory, the F1 of each
sweep beside the CPU benchmark's, and what a CAS(ME)²-sized LOSO would take. Results:
experiments/bench/gpu.{json,md}, rewritten after every step, so a run cut short keeps what it
measured.

Without CUDA the same steps run at toy sizes on the CPU (`--profile cpu`, a minute or two): a
test runs that mode, so the script cannot rot. Each step runs the commands a user runs
(`python -m mespot.cli.…`), so it needs nothing installed beyond the packages: it also runs from
a plain checkout on a machine with PYTHONPATH set to it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mespot.bench import common
from mespot.bench.common import DEFAULT_OUT, REPO, TIMED_OUT, f1, log, num, tail

PAPER_EPOCHS = 30
CASME2 = {"subjects": 22, "frames": 254_000, "window": 128, "stride": 64, "val_subjects": 2}
GOAL_HOURS = 2.0  # every fold of a CAS(ME)²-sized LOSO on one GPU (the goal)
FLOW_GOAL = 3000  # TV-L1 pairs/s at 128² on one GPU
EPE_GOAL = 1.2  # torch TV-L1's face EPE within this factor of OpenCV's
PREPROCESS_JSON = DEFAULT_OUT / "preprocess.json"  # OpenCV's EPE on the same known motion
ACCURACY_JSON = DEFAULT_OUT / "accuracy.json"  # the CPU benchmark's rows


@dataclass(frozen=True)
class Profile:
    """What one machine kind runs: the mock, the cache, the sweeps and the spot recording."""

    name: str
    synth: dict
    size: int
    flow: str  # preprocessing's flow method
    model: tuple[str, ...]  # overrides that size the model and the trainer for the machine
    paper: tuple[str, ...]  # experiment=paper's own overrides (besides data and model)
    recipe: tuple[str, ...]
    n_jobs: int  # folds at once (joblib), at most: the paper's sweep takes as many as memory holds
    spot_seconds: float
    flow_batches: tuple[int, ...]  # pairs per call, timed
    compiled_flow: bool  # also time tvl1_torch's step through torch.compile
    paper_budget_s: float  # what the paper sweep's training may take (sizes its epochs)
    budget_s: float  # the whole check: a step that would run past it is cut short or skipped
    val_subjects: int | None = None  # None: each experiment's own
    extra: dict = field(default_factory=dict)

    @property
    def frames(self) -> int:
        """The frames of the whole mock."""
        return self.synth["subjects"] * self.synth["videos_per_subject"] * self.synth["frames"]


GPU = Profile(
    name="gpu",
    synth=dict(
        subjects=6, videos_per_subject=2, frames=600, mae_per_video=3, me_per_video=3, seed=0
    ),  # the accuracy benchmark's mock (mespot/bench/accuracy.py SYNTH)
    size=128,
    flow="tvl1_torch",
    model=("trainer=gpu",),
    paper=("experiment=paper", "data.num_workers=4"),
    recipe=(
        "experiment=bench_accuracy",
        "model/backbone=vovnet",
        "model/neck=paper",
        "data.num_workers=2",
    ),
    n_jobs=6,
    spot_seconds=60.0,
    flow_batches=(128, 512, 2048),
    compiled_flow=True,
    paper_budget_s=120.0,
    budget_s=480.0,
)
CPU = Profile(
    name="cpu",
    synth=dict(
        subjects=3, videos_per_subject=1, frames=120, mae_per_video=1, me_per_video=1, seed=0
    ),
    size=32,
    flow="tvl1",
    model=(
        "trainer=cpu",
        "data.num_workers=0",
        "model/backbone=vovnet_small",
        "model/neck=small",
        "data.window=32",
        "data.stride=16",
        "data.batch_size=4",
    ),
    paper=("experiment=paper",),
    recipe=(
        "experiment=bench_accuracy",
        "model.backbone_warmup=1",
        "trainer.max_epochs=2",
        "data.rest_span=60",
    ),
    n_jobs=2,
    spot_seconds=3.0,
    flow_batches=(8,),
    compiled_flow=False,
    paper_budget_s=10.0,
    budget_s=900.0,
    val_subjects=1,
)
PROFILES = {"gpu": GPU, "cpu": CPU}


# --------------------------------------------------------------------------- commands


def python_module(module: str, *args: str) -> list[str]:
    """A mespot command as `python -m`, so a plain checkout runs it without console scripts."""
    return [sys.executable, "-m", module, *args]


def run_step(command: Sequence[str], log_path: Path, timeout: float | None = None) -> dict:
    """common.run_logged, as a step of the report: status, seconds, its log and its command (as
    a user types it: `mespot.cli.train …` without the interpreter)."""
    status, seconds = common.run_logged(command, log_path, timeout)
    shown = command[2:] if command[0] == sys.executable else command
    return {"status": status, "seconds": seconds, "log": str(log_path), "command": " ".join(shown)}


def checked(step: dict) -> dict:
    """A step that must succeed: its error output ends the check."""
    if step["status"] != 0:
        raise StepFailed(
            f"{step['command']} failed (status {step['status']}):\n{tail(step['log'], 3000)}"
        )
    return step


class StepFailed(RuntimeError):
    pass


# --------------------------------------------------------------------------- the GPU's load


class GpuSampler:
    """nvidia-smi's utilisation (share of each 100 ms in which a kernel ran) and memory in use,
    sampled in the background while a step runs; nothing where there is no nvidia-smi."""

    def __init__(self, period_ms: int = 100):
        self.samples: list[tuple[float, float]] = []
        self.period_ms = period_ms
        self._process = None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi") is None:
            return self
        self._process = subprocess.Popen(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu,memory.used",
                "--format=csv,noheader,nounits",
                f"--loop-ms={self.period_ms}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        for line in self._process.stdout:
            try:
                utilisation, memory = (float(v) for v in line.split(",")[:2])
            except ValueError:
                continue
            self.samples.append((utilisation, memory))

    def __exit__(self, *exc) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._reader.join(timeout=5)

    def summary(self) -> dict | None:
        if not self.samples:
            return None
        utilisation = np.array([u for u, _ in self.samples])
        return {
            "samples": len(self.samples),
            "busy_share": float(utilisation.mean() / 100),
            "busy_share_median": float(np.median(utilisation) / 100),
            "peak_memory_mb": float(max(m for _, m in self.samples)),
        }


# --------------------------------------------------------------------------- steps


def environment(profile: Profile) -> dict:
    import cv2
    import torch

    env = common.environment(
        "torch", "lightning", "timm", "numpy", opencv=cv2.__version__, opencv_contrib=_opencv_tvl1()
    )
    env["profile"] = profile.name
    env["cuda"] = torch.version.cuda
    env["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = props.name
        env["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
        env["gpu_count"] = torch.cuda.device_count()
        env["driver"] = common.first_line(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        )
    return env


def face_detector() -> str:
    """haar when this OpenCV ships its cascade; else none (a centred crop): OpenCV 5 wheels have
    no cascades, and the mock's face fills most of the frame."""
    from mespot.data.face import detect_face
    from mespot.errors import UserError

    try:
        detect_face([np.zeros((64, 64), np.uint8)], "haar")
        return "haar"
    except UserError:
        return "none"


def _opencv_tvl1() -> bool:
    import cv2

    return hasattr(cv2, "optflow")


def bench_flow(profile: Profile) -> dict:
    """tvl1_torch at the cache's size: pairs/s per batch size on this machine's device, and its
    end-point error on the preprocessing benchmark's known motion (the same 8 faces and fields
    and noise) beside OpenCV's, recorded by `make bench` with the same settings."""
    import torch

    from mespot.bench.preprocess import SENSOR_NOISE, FlowSetting, accuracy, add_noise, make_cases
    from mespot.cli.common import compose_train

    cfg = compose_train(["data.root=unused", "data.test_subject=x"])
    params = dict(cfg.preprocessing.flow.tvl1)
    cases = make_cases(8, 0)
    rng = np.random.default_rng(1)
    noisy = [add_noise(c, rng, SENSOR_NOISE) for c in cases]
    setting = FlowSetting("tvl1_torch", "tvl1_torch", tuple(params.items()))
    row: dict = {"params": params, **accuracy(setting, cases)}
    row["epe_face_noisy"] = accuracy(setting, noisy)["epe_face"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    row.update(device=device, size=int(cases[0].prev.shape[0]))
    row["pairs_per_s"] = _flow_rates(profile.flow_batches, noisy, params, device, False)
    row["best_pairs_per_s"] = max(row["pairs_per_s"].values())
    if profile.compiled_flow:  # the inner step fused by torch.compile: does it reach the goal?
        start = time.perf_counter()
        try:
            _flow_rates((2,), noisy, params, device, True)  # compiles
            row["compile_seconds"] = time.perf_counter() - start
            row["compiled_pairs_per_s"] = _flow_rates(
                profile.flow_batches, noisy, params, device, True
            )
        except Exception as e:  # a compiler missing or failing: say so, go on
            row["compiled_error"] = f"{type(e).__name__}: {e}"[:800]
    torch.cuda.empty_cache()  # this process's cached blocks would crowd the folds' memory out
    opencv = _opencv_epe(params)
    if opencv:
        row["opencv"] = opencv
        row["epe_ratio"] = row["epe_face"] / opencv["epe_face"]
    return row


def _flow_rates(batches, cases, params: dict, device: str, compiled: bool) -> dict[str, float]:
    """tvl1_flow's pairs/s on `device` for each number of pairs per call (after one call of
    that size off the clock: the CUDA context, kernels, cuDNN's choices)."""
    import torch

    from mespot.data.tvl1 import tvl1_flow

    rates = {}
    for batch in batches:
        picks = [cases[i % len(cases)] for i in range(batch)]
        prevs = torch.from_numpy(np.stack([c.prev for c in picks])).to(device)
        nexts = torch.from_numpy(np.stack([c.next for c in picks])).to(device)
        tvl1_flow(prevs, nexts, params, compiled).cpu()
        runs = 2
        start = time.perf_counter()
        for _ in range(runs):
            tvl1_flow(prevs, nexts, params, compiled).cpu()
        rates[str(batch)] = runs * batch / (time.perf_counter() - start)
    return rates


def _opencv_epe(params: dict) -> dict | None:
    """OpenCV's TV-L1 on the same motion with the same settings: preprocess.json's
    `tvl1-mid-a`, if that row holds these `params`."""
    if not PREPROCESS_JSON.is_file():
        return None
    rows = json.loads(PREPROCESS_JSON.read_text()).get("flow", {}).get("rows", [])
    row = next((r for r in rows if r.get("name") == "tvl1-mid-a"), None)
    if row is None or row.get("params") != params:  # recorded for other settings than conf's
        return None
    keys = ("epe_face", "epe_small", "epe_face_noisy", "pairs_per_s_1core")
    return {k: row.get(k) for k in keys} | {"source": str(PREPROCESS_JSON.relative_to(REPO))}


@dataclass
class Workspace:
    """Folders of one check: the mock, its caches, the sweeps and the logs."""

    root: Path

    @property
    def mock(self) -> Path:
        return self.root / "casme2"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def sweep(self, name: str) -> Path:
        return self.root / "runs" / name


def make_mock(profile: Profile, ws: Workspace, workers: int) -> dict:
    if ws.mock.exists():
        shutil.rmtree(ws.mock)
    settings = [f"{k}={v}" for k, v in profile.synth.items()]
    command = python_module(
        "mespot.cli.synth", "data=casme2", f"out={ws.mock}", *settings, f"workers={workers}"
    )
    step = checked(run_step(command, ws.logs / "synth.log"))
    return step | {"frames": profile.frames, "frames_per_s": profile.frames / step["seconds"]}


def preprocessing_overrides(profile: Profile, align: str, detector: str) -> list[str]:
    """The cache's settings, as mespot-train's `preprocessing.*` overrides."""
    return [
        f"preprocessing.size={profile.size}",
        f"preprocessing.flow.method={profile.flow}",
        f"preprocessing.face.align={align}",
        f"preprocessing.face.detector={detector}",
    ]


def preprocess(profile: Profile, ws: Workspace, align: str, detector: str, workers: int) -> dict:
    command = python_module(
        "mespot.cli.preprocess",
        "data=casme2",
        f"data.root={ws.mock}",
        f"paths.cache_dir={ws.cache}",
        f"size={profile.size}",
        f"flow.method={profile.flow}",
        f"face.align={align}",
        f"face.detector={detector}",
        f"workers={workers}",
        "force=true",
        "progress=false",
    )
    with GpuSampler() as gpu:
        step = checked(run_step(command, ws.logs / f"preprocess_{align}.log"))
    return step | {
        "align": align,
        "frames": profile.frames,
        "frames_per_s": profile.frames / step["seconds"],
        "gpu": gpu.summary(),
    }


def train_overrides(
    profile: Profile, ws: Workspace, experiment: Sequence[str], align: str, detector: str
) -> list[str]:
    overrides = [
        *experiment,
        *profile.model,
        f"data.root={ws.mock}",
        f"paths.cache_dir={ws.cache}",
        *preprocessing_overrides(profile, align, detector),
        "logger=csv",
        "callbacks.progress=null",
        "+trainer.enable_progress_bar=false",
        "+callbacks.throughput._target_=mespot.callbacks.Throughput",
    ]
    if profile.val_subjects is not None:
        overrides.append(f"data.val_subjects={profile.val_subjects}")
    return overrides


def probe(profile: Profile, ws: Workspace, overrides: Sequence[str], epochs: int = 3) -> dict:
    """One fold alone, `epochs` epochs, no test: how fast and fed a single fold is, its memory,
    and the seconds of an epoch once the first epoch's one-off costs are paid (its last epoch),
    before the sweep's epochs and folds at once are chosen."""
    folder = ws.root / "runs" / "probe"
    if folder.exists():
        shutil.rmtree(folder)
    subject = _first_subject(ws)
    command = python_module(
        "mespot.cli.train",
        *overrides,
        f"data.test_subject={subject}",
        f"trainer.max_epochs={epochs}",
        "test=false",
        f"hydra.run.dir={folder}",
    )
    with GpuSampler() as gpu:
        step = checked(run_step(command, ws.logs / "probe.log"))
    throughput = json.loads((folder / "throughput.json").read_text())
    return step | {
        "epochs": epochs,
        "epoch_seconds": throughput["epoch_seconds"][-1],
        "first_epoch_seconds": throughput["epoch_seconds"][0],
        "throughput": throughput,
        "gpu": gpu.summary(),
    }


def _first_subject(ws: Workspace) -> str:
    cache = next(ws.cache.glob("casme2-*"))
    import pandas as pd

    return sorted(pd.read_csv(cache / "videos.csv", dtype={"subject": str})["subject"])[0]


def folds_at_once(profile: Profile, peak_mb: float | None, folds: int) -> int:
    """As many folds at once as the GPU's memory holds at the probe's peak (with room for each
    process's CUDA context and the allocator's slack), at most the profile's n_jobs."""
    import torch

    n = min(profile.n_jobs, folds)
    if torch.cuda.is_available():
        if not peak_mb:  # unknown: one at a time, never out of memory
            return 1
        total_mb = torch.cuda.get_device_properties(0).total_memory / 2**20
        n = min(n, int(0.85 * total_mb // (1.15 * peak_mb + 1024)))
    return max(1, n)


def sized_epochs(profile: Profile, epoch_seconds: float, folds: int, n_jobs: int) -> int:
    """The paper's 30 epochs, or as many as fit the profile's budget for the sweep's training,
    counting on folds run together taking at most half the time they take one after another."""
    overlap = min(n_jobs, 2)
    fits = int(profile.paper_budget_s * overlap / max(folds * epoch_seconds, 1e-9))
    return max(1, min(PAPER_EPOCHS, fits))


def sweep(
    name: str,
    profile: Profile,
    ws: Workspace,
    overrides: Sequence[str],
    n_jobs: int,
    timeout: float,
) -> dict:
    """Every fold of one experiment at once (joblib), into a fresh sweep folder: the summed
    F1s, each fold's throughput, and the GPU's load over the whole sweep."""
    folder = ws.sweep(name)
    if folder.exists():
        shutil.rmtree(folder)
    command = python_module(
        "mespot.cli.train",
        "-m",
        *overrides,
        "data.test_subject=all",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={n_jobs}",
        f"hydra.sweep.dir={folder}",
    )
    with GpuSampler() as gpu:
        step = run_step(command, ws.logs / f"{name}.log", timeout=max(timeout, 1))
    if step["status"] == TIMED_OUT:
        raise StepFailed(
            f"{name}: cut short after {step['seconds']:.0f} s, at the check's "
            "time budget (its folds' logs are in the sweep folder)"
        )
    row = step | {"name": name, "gpu": gpu.summary(), "sweep": str(folder), "n_jobs": n_jobs}
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise StepFailed(
            f"{name}: no summary.json (status {step['status']}):\n{tail(step['log'], 3000)}"
        )
    (experiment,) = json.loads(summary_path.read_text())["experiments"]
    row.update(
        {
            k: experiment[k]
            for k in ("complete", "folds_done", "folds_expected", "failed", "mae", "me", "overall")
        }
    )
    folds = [json.loads(p.read_text()) for p in sorted(folder.glob("*/throughput.json"))]
    row["folds"] = folds
    row["throughput"] = _sweep_throughput(folds, step["seconds"])
    row["checkpoint"] = _a_checkpoint(folder)
    return row


def _sweep_throughput(folds: list[dict], wall: float) -> dict:
    """Frames every fold trained and evaluated; their sum over the sweep's wall clock (start-up
    and test included: what a LOSO costs), and each fold's own rates."""

    def total(split: str, key: str) -> float:
        return float(sum(f[split][key] for f in folds))

    frames = {s: total(s, "frames") for s in ("train", "val", "test")}
    own = {s: [f[s]["frames_per_s"] for f in folds if f[s]["frames_per_s"]] for s in frames}
    waits = [f["train"]["wait_share"] for f in folds if f["train"]["wait_share"] is not None]
    peaks = [f["peak_gpu_memory_mb"] for f in folds if f.get("peak_gpu_memory_mb")]
    return {
        "frames": frames,
        "sweep_frames_per_s": sum(frames.values()) / wall if wall > 0 else None,
        "sweep_train_frames_per_s": frames["train"] / wall if wall > 0 else None,
        "fold_train_frames_per_s": float(np.mean(own["train"])) if own["train"] else None,
        "fold_eval_frames_per_s": float(np.mean(own["val"] + own["test"]))
        if own["val"] + own["test"]
        else None,
        "wait_share": float(np.mean(waits)) if waits else None,
        "peak_gpu_memory_mb_per_fold": max(peaks) if peaks else None,
    }


def _a_checkpoint(folder: Path) -> str | None:
    """The kept (best-epoch) checkpoint of the sweep's first fold."""
    kept = sorted(p for p in folder.glob("0/checkpoints/epoch_*.ckpt"))
    return str(kept[-1]) if kept else None


def bench_spot(profile: Profile, ws: Workspace, checkpoint: str) -> dict:
    """mespot-spot on a fresh recording with a checkpoint the paper sweep kept, in a fresh
    process (as a user runs it): × real time and where the time goes."""
    from mespot.bench.spot import rates, run_in_fresh_process, write_recording

    folder = ws.root / "spot"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    recording = write_recording(folder, profile.spot_seconds)
    run = run_in_fresh_process(Path(recording["path"]), Path(checkpoint), folder / "out")
    return {"recording": recording, "checkpoint": checkpoint, **run, **rates(run)}


# --------------------------------------------------------------------------- estimate


def casme2_estimate(row: dict, epochs: int = PAPER_EPOCHS) -> dict | None:
    """Hours for every fold of a CAS(ME)²-sized LOSO (22 folds, 254k frames, 30 epochs) at the
    rate a sweep here kept up over its whole wall clock: frames trained and evaluated per fold
    and epoch follow from the subjects each fold trains and validates on, windows overlapping
    by half (each frame is seen window / stride = 2 times)."""
    rate = (row.get("throughput") or {}).get("sweep_frames_per_s")
    if not rate:
        return None
    c = CASME2
    per_subject = c["frames"] / c["subjects"] * c["window"] / c["stride"]
    train = (c["subjects"] - 1 - c["val_subjects"]) * per_subject * epochs
    val = c["val_subjects"] * per_subject * epochs
    test = per_subject
    frames = c["subjects"] * (train + val + test)
    hours = frames / rate / 3600
    return {
        "frames": frames,
        "frames_per_s": rate,
        "hours": hours,
        "goal_hours": GOAL_HOURS,
        "meets_goal": hours <= GOAL_HOURS,
        "epochs": epochs,
        "how": "22 folds × (19 training subjects × 30 epochs + 2 validation subjects × 30 "
        "epochs + the test subject once) × 254k/22 frames per subject × 2 (windows "
        "of 128 every 64 frames) ÷ the frames/s this sweep kept up over its wall "
        "clock (all its folds at once, start-up and test included)",
    }


# --------------------------------------------------------------------------- the report


def cpu_rows() -> dict:
    """The CPU benchmark's recorded rows (experiments/bench/accuracy.json) to set beside these."""
    if not ACCURACY_JSON.is_file():
        return {}
    rows = json.loads(ACCURACY_JSON.read_text()).get("rows", [])
    return {r["method"]: r for r in rows if "overall" in r}


def _share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def markdown(result: dict) -> str:
    """The report: the machine, then a section per step that ran, and the command."""
    lines = ["# GPU check", "", environment_line(result["environment"]), ""]
    if result.get("error"):
        lines += ["**The check stopped early**:", "", "```", result["error"][-1500:], "```", ""]
    if not result.get("finished"):
        lines += ["(Unfinished: the figures below are those measured so far.)", ""]
    sections = (flow_section, data_section, probe_section, sweeps_section, estimate_section,
                spot_section)  # fmt: skip
    for section in sections:
        lines += section(result)
    return "\n".join(lines + common.made_by(result["command"]))


def environment_line(env: dict) -> str:
    """The report's first line: when, which code, which profile, device, CPUs and libraries."""
    gpu = (
        f"{env.get('gpu')} ({env.get('gpu_memory_gb')} GB, driver {env.get('driver')}, CUDA "
        f"{env.get('cuda')}, cuDNN {env.get('cudnn')})"
        if env.get("gpu")
        else "no CUDA GPU"
    )
    return (
        f"{env['date']}, commit {env['commit']}, profile **{env['profile']}**, {gpu}, "
        f"{env['cpu_count']} CPUs ({env['cpu']}), torch {env['torch']}, lightning "
        f"{env['lightning']}, timm {env['timm']}, numpy {env['numpy']}, OpenCV {env['opencv']} "
        f"(contrib: {env['opencv_contrib']}), Python {env['python']}."
    )


EPE_COLUMNS = ("flow", "EPE face px", "EPE <1 px", "EPE noisy px")


def flow_section(result: dict) -> list[str]:
    flow = result.get("flow")
    if not flow:
        return []
    rates = ", ".join(f"{b} pairs per call: {r:.0f}" for b, r in flow["pairs_per_s"].items())
    if flow.get("compiled_pairs_per_s"):
        fused = ", ".join(f"{b}: {r:.0f}" for b, r in flow["compiled_pairs_per_s"].items())
        rates += (f"; with torch.compile ({flow['compile_seconds']:.0f} s to compile) "
                  f"{fused}")  # fmt: skip
    elif flow.get("compiled_error"):
        rates += f"; torch.compile failed: {flow['compiled_error'][:200]}"
    cv = flow.get("opencv") or {}
    rows = [(f"tvl1_torch ({flow['device']})", flow)]
    if cv:
        rows.append((f"OpenCV tvl1 (CPU, {cv['source']})", cv))
    lines = [
        "## Optical flow: TV-L1 in torch",
        "",
        f"On {flow['device']}, {flow['size']}×{flow['size']} grey, conf's TV-L1 settings "
        f"({' '.join(f'{k}={v}' for k, v in flow['params'].items())}): **{rates} pairs/s** "
        f"(goal ≥ {FLOW_GOAL} on one GPU).",
        "",
        *common.table(EPE_COLUMNS, "lrrr", [(name, *epe_cells(r)) for name, r in rows]),
    ]
    if cv:
        lines += [
            "",
            f"EPE ratio torch / OpenCV: **{flow['epe_ratio']:.3f}** (goal ≤ {EPE_GOAL}).",
        ]
    return [*lines, ""]


def epe_cells(row: dict) -> tuple[str, str, str]:
    return num(row["epe_face"], 3), num(row["epe_small"], 3), num(row["epe_face_noisy"], 3)


def data_section(result: dict) -> list[str]:
    data = result.get("data")
    if not data:
        return []
    lines = ["## Mock and cache", ""]
    mock = data.get("mock")
    if mock:
        lines.append(
            f"- mock ({', '.join(f'{k}={v}' for k, v in data['synth'].items())}): "
            f"{mock['frames']} frames in {mock['seconds']:.1f} s "
            f"({mock['frames_per_s']:.0f} frames/s, {data['workers']} workers)"
        )
    for step in data.get("preprocess", []):
        busy = (step.get("gpu") or {}).get("busy_share")
        lines.append(
            f"- preprocess, face.align={step['align']}, {data['size']} px, flow "
            f"{data['flow']}, face detector {data['detector']}: {step['frames']} "
            f"frames in {step['seconds']:.1f} s ({step['frames_per_s']:.0f} "
            f"frames/s, GPU busy {_share(busy)})"
        )
    return [*lines, ""]


def probe_section(result: dict) -> list[str]:
    probe_row = result.get("probe")
    if not probe_row:
        return []
    t = probe_row["throughput"]
    return [
        f"## One fold alone (experiment=paper, {probe_row['epochs']} epochs, no test)",
        "",
        f"Epoch (train + validation): {num(probe_row.get('first_epoch_seconds'), 1)} s the "
        f"first, {probe_row['epoch_seconds']:.1f} s the last; training "
        f"{num(t['train']['frames_per_s'], 0)} frames/s, waiting for data "
        f"{_share(t['train']['wait_share'])} of training; validation "
        f"{num(t['val']['frames_per_s'], 0)} frames/s; peak GPU memory "
        f"{num(t.get('peak_gpu_memory_mb'), 0)} MB; GPU busy "
        f"{_share((probe_row.get('gpu') or {}).get('busy_share'))} over the process "
        f"({probe_row['seconds']:.0f} s with start-up).",
        "",
    ]


SWEEP_COLUMNS = ("sweep", "epochs", "folds at once", "MaE F1", "ME F1", "Overall F1", "folds",
                 "wall", "train frames/s per fold", "eval frames/s per fold", "sweep frames/s",
                 "waits for data", "GPU busy", "peak GPU MB per fold", "peak GPU MB")  # fmt: skip
F1_COLUMNS = ("MaE F1", "ME F1", "Overall F1")


def sweeps_section(result: dict) -> list[str]:
    sweeps = result.get("sweeps", [])
    if not sweeps:
        return []
    lines = [
        "## Every LOSO fold, all folds at once on the one device",
        "",
        *common.table(SWEEP_COLUMNS, "l" + "r" * 14, map(sweep_cells, sweeps)),
    ]
    cpu = cpu_rows()
    if cpu:
        keys = [key for key in ("vovnet_flow", "baseline") if key in cpu]
        rows = [(cpu[key].get("label", key), *f1_cells(cpu[key])) for key in keys]
        lines += [
            "",
            "The CPU benchmark (experiments/bench/accuracy.md, CPU sizes, 64 px, the same mock):",
            "",
            *common.table(("CPU row", *F1_COLUMNS), "lrrr", rows),
        ]
    lines += [
        "",
        "Commands (from the repository root; `mespot-train` = `python -m mespot.cli.train`):",
        "",
    ]
    lines += [
        f"- {row['name']}: `mespot-train {row['command'].split(' ', 1)[1]}`" for row in sweeps
    ]
    return [*lines, ""]


def f1_cells(row: dict) -> tuple[str, str, str]:
    return f1(row, "mae"), f1(row, "me"), f1(row, "overall")


def sweep_cells(row: dict) -> list[str]:
    t, g = row["throughput"], row.get("gpu") or {}
    return [row["name"], row.get("epochs", "–"), row["n_jobs"], *f1_cells(row),
            f"{row['folds_done']}/{row['folds_expected']}", f"{row['seconds'] / 60:.1f} min",
            num(t["fold_train_frames_per_s"], 0), num(t["fold_eval_frames_per_s"], 0),
            num(t["sweep_frames_per_s"], 0), _share(t["wait_share"]),
            _share(g.get("busy_share")), num(t["peak_gpu_memory_mb_per_fold"], 0),
            num(g.get("peak_memory_mb"), 0)]  # fmt: skip


def estimate_section(result: dict) -> list[str]:
    estimate = result.get("casme2_estimate")
    if not estimate:
        return []
    return [
        "## A CAS(ME)²-sized LOSO on this device",
        "",
        f"**{estimate['hours']:.1f} h** for every fold (goal ≤ {GOAL_HOURS:g} h: "
        f"{'met' if estimate['meets_goal'] else 'not met'}), at "
        f"{estimate['frames_per_s']:.0f} frames/s: {estimate['how']}.",
        "",
    ]


def spot_section(result: dict) -> list[str]:
    spot = result.get("spot")
    if not spot:
        return []
    recording = spot["recording"]
    return [
        "## mespot-spot",
        "",
        f"A {recording['seconds']:.0f}-s {recording['size'][0]}×{recording['size'][1]} "
        f"recording at {recording['fps']:g} fps with the paper sweep's first kept checkpoint: "
        f"**{spot['realtime']:.2f}× real time** ({spot['seconds']:.1f} s; the whole process "
        f"{spot['process_seconds']:.1f} s); "
        + ", ".join(f"{k} {v:.1f} s" for k, v in spot["phases"].items())
        + ".",
        "",
    ]


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common.arguments("gpu", __doc__)
    parser.add_argument(
        "--profile",
        choices=list(PROFILES),
        help="gpu with a CUDA GPU, cpu without one (default: by the machine)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=REPO / "data" / "gpu",
        help="the mock, caches, sweeps and logs (default: data/gpu)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes for the mock and preprocessing (default: every core)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    profile = PROFILES[args.profile or ("gpu" if torch.cuda.is_available() else "cpu")]
    # folds sharing a GPU: freed blocks return to one pool instead of fragmenting each process's
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    workers = args.workers or os.cpu_count() or 1
    out, ws = common.out_folder(args), Workspace(args.work)
    ws.root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result: dict = {
        "environment": environment(profile),
        "finished": False,
        "command": common.command_line("gpu", argv),
    }

    def save() -> None:
        common.write_report(result, out, "gpu", markdown)

    try:
        _run(profile, ws, workers, result, save)
        result["finished"] = True
    except StepFailed as e:
        result["error"] = str(e)
        log(f"stopped: {e}")
    common.finish(result, start, out, "gpu", markdown)
    print(markdown(result))
    return 0 if result["finished"] else 1


def _run(profile: Profile, ws: Workspace, workers: int, result: dict, save) -> None:
    deadline = time.monotonic() + profile.budget_s

    def left() -> float:
        return deadline - time.monotonic()

    detector = face_detector()
    if profile.flow == "tvl1" and not _opencv_tvl1():
        profile = replace(profile, flow="tvl1_torch")  # this OpenCV has no contrib build
    log(f"profile {profile.name}; face detector {detector}; flow {profile.flow}")
    result["flow"] = bench_flow(profile)
    save()
    data = result["data"] = {
        "synth": profile.synth,
        "size": profile.size,
        "flow": profile.flow,
        "detector": detector,
        "workers": workers,
        "preprocess": [],
    }
    log("mock")
    data["mock"] = make_mock(profile, ws, workers)
    log("preprocess (faces as they are)")
    data["preprocess"].append(preprocess(profile, ws, "none", detector, workers))
    save()
    paper = train_overrides(profile, ws, profile.paper, "none", detector)
    log("probe: one fold alone")
    result["probe"] = probe(profile, ws, paper)
    folds = profile.synth["subjects"]
    peak = result["probe"]["throughput"].get("peak_gpu_reserved_mb")
    n_jobs = folds_at_once(profile, peak, folds)
    epochs = sized_epochs(profile, result["probe"]["epoch_seconds"], folds, n_jobs)
    save()
    log(f"experiment=paper, {epochs} epochs, {n_jobs} folds at once ({left():.0f} s left)")
    row = sweep("paper", profile, ws, [*paper, f"trainer.max_epochs={epochs}"], n_jobs, left())
    row["epochs"] = epochs
    result["sweeps"] = [row]
    result["casme2_estimate"] = casme2_estimate(row)
    save()
    if row["checkpoint"] and left() > 60:
        log(f"mespot-spot ({left():.0f} s left)")
        result["spot"] = bench_spot(profile, ws, row["checkpoint"])
        save()
    if left() < 120:
        raise StepFailed(
            f"{left():.0f} s of the {profile.budget_s:.0f}-s budget left: the "
            "recipe's sweep was not run"
        )
    log("preprocess (faces held still)")
    data["preprocess"].append(preprocess(profile, ws, "stabilise", detector, workers))
    save()
    log(f"the accuracy recipe at paper size, every fold ({left():.0f} s left)")
    recipe = train_overrides(profile, ws, profile.recipe, "stabilise", detector)
    row = sweep("recipe", profile, ws, recipe, min(profile.n_jobs, folds), left())
    row["epochs"] = _epochs_of(row)
    result["sweeps"].append(row)
    save()


def _epochs_of(row: dict) -> int | None:
    """The epochs a sweep's folds ran (its first fold's config)."""
    config = Path(row["sweep"]) / "0" / "config.yaml"
    if not config.is_file():
        return None
    from omegaconf import OmegaConf

    return int(OmegaConf.load(config).trainer.max_epochs)


if __name__ == "__main__":
    raise SystemExit(main())
