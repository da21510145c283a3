"""Training benchmark: model sizes, training and inference throughput, peak memory of an epoch.

    python -m mespot.bench.training [--quick] [--out DIR]

Writes experiments/bench/training.json (every figure, with date, commit, machine, torch and
device) and training.md (the tables), and prints the tables. Throughput times the spotter
(backbone → temporal FPN → head) on random input with a few random ground-truth segments, for
each backbone at the paper's size and at its CPU size (conf/model/backbone/*.yaml). Loader
times what one loader worker delivers at the paper's input size, per input layout: how many
workers a GPU needs to be fed. Memory trains one epoch on a small and a 10× larger mock
CAS(ME)² cache, each in a fresh process, to show that RAM does not grow with the dataset: the
DataModule memory-maps the videos.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from omegaconf import OmegaConf

from mespot.bench import common
from mespot.bench.common import log, num, plural, say
from mespot.cli.common import CONFIG_PATH
from mespot.data.adapters import load_annotations
from mespot.data.augment import WindowAugment
from mespot.data.datamodule import SpottingDataModule
from mespot.data.dataset import WindowDataset, collate
from mespot.data.inputs import InputSpec
from mespot.data.preprocess import Settings, preprocess
from mespot.data.synth import MockSpec, write_mock
from mespot.data.videos import read_cache
from mespot.models.fpn import PAPER, SMALL
from mespot.module import SpotterModule

IN_CHANS = 3  # grey frame + 2 flow channels, the cache's default
NECKS = {"paper": PAPER, "cpu": SMALL}
NECK_NAMES = {"paper": "PAPER", "cpu": "SMALL"}  # mespot.models.fpn's presets
SCALE_NAMES = {"paper": "Paper size", "cpu": "CPU size"}
BACKBONES = ("vovnet", "resnet", "densenet")  # paper size; "<name>_small" is the CPU size
PAPER_PX, PAPER_WINDOW, PAPER_BATCH = 128, 128, 1
CPU_PX, CPU_WINDOW, CPU_BATCH = 64, 64, 4
STEP_LIMIT = 60.0  # s: a paper-size training step longer than this is timed on SHORT_WINDOW
SHORT_WINDOW = 32
SEGMENTS = ((1, (3, 12)), (0, (10, 40)))  # (label, length range in frames): one ME, one MaE
EPOCH = dict(window=64, stride=32, batch_size=4, val_subjects=1, num_workers=0)
CACHE_SETTINGS = Settings(size=32, flow_method="dis", detector="none")


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Variant:
    """One model to time: a backbone config (conf/model/backbone/<config>.yaml), the neck of its
    scale (paper → PAPER, cpu → SMALL) and the input it sees."""

    config: str
    scale: str  # paper | cpu
    px: int  # input is px × px
    window: int  # frames per window
    batch: int


def variants() -> list[Variant]:
    """Every backbone at the paper's size and at its CPU size, paper first."""
    paper = [Variant(b, "paper", PAPER_PX, PAPER_WINDOW, PAPER_BATCH) for b in BACKBONES]
    cpu = [Variant(f"{b}_small", "cpu", CPU_PX, CPU_WINDOW, CPU_BATCH) for b in BACKBONES]
    return paper + cpu


def backbone_options(config: str) -> dict:
    """The backbone config users train with (`model/backbone=<config>`), as plain data."""
    path = Path(CONFIG_PATH) / "model" / "backbone" / f"{config}.yaml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def build_model(variant: Variant, device: torch.device) -> SpotterModule:
    """The spotter as training builds it, default head and loss, on `device`."""
    neck = NECKS[variant.scale]
    return SpotterModule(IN_CHANS, backbone_options(variant.config), neck).to(device)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def param_counts(model: SpotterModule) -> dict[str, int]:
    """Parameters of the per-frame backbone, of the temporal part (FPN + head), and in all."""
    return {
        "params_backbone": count(model.spotter.encoder),
        "params_neck_head": count(model.spotter.neck) + count(model.spotter.head),
        "params_total": count(model),
    }


def pick_device() -> torch.device:
    """CUDA when there is a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


# --------------------------------------------------------------------------- timing


def random_segments(window: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One ME and one MaE at random places in the window (inclusive frame indices), so the loss
    has positives on several pyramid levels as real windows do."""
    segments, labels = [], []
    for label, (shortest, longest) in SEGMENTS:
        hi = max(2, min(longest, window // 2))
        length = int(torch.randint(min(shortest, hi - 1), hi, (), generator=generator))
        start = int(torch.randint(0, window - length + 1, (), generator=generator))
        segments.append((start, start + length - 1))
        labels.append(label)
    return torch.tensor(segments, dtype=torch.float32), torch.tensor(labels)


def random_batch(
    batch: int, window: int, px: int, device: torch.device, seed: int = 0
) -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """A batch as the DataModule collates it: frames in [0, 1) and per-window ground truth."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, window, IN_CHANS, px, px, generator=generator)
    truth = [random_segments(window, generator) for _ in range(batch)]
    return {
        "x": x.to(device),
        "segments": [s.to(device) for s, _ in truth],
        "labels": [lab.to(device) for _, lab in truth],
    }


def train_step(model: SpotterModule, optimizer: torch.optim.Optimizer, batch: dict) -> None:
    """Forward, the loss training uses (target assignment included), backward, Adam step. Via
    `_losses`, not `training_step`: that one also logs, which needs a Trainer."""
    losses = model._losses(batch, *model(batch["x"]))
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()


def infer_step(model: SpotterModule, batch: dict) -> None:
    with torch.no_grad():
        model(batch["x"])


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    step: Callable[[], None], device: torch.device, steps: int, seconds: float = 0.0
) -> tuple[int, float]:
    """(steps done, seconds taken): at least `steps` and until `seconds` have passed."""
    sync(device)
    done, start = 0, time.perf_counter()
    while done < steps or time.perf_counter() - start < seconds:
        step()
        done += 1
    sync(device)
    return done, time.perf_counter() - start


def estimate_full_step(
    variant: Variant,
    model: SpotterModule,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    short_window: int,
    probes: int = 2,
) -> float:
    """Seconds a full-window training step would take, scaled from the last of `probes` steps on
    the short window: the first steps are slow (oneDNN builds kernels for every new shape, the
    allocator grows, Adam allocates its state), so the first alone would overestimate it."""
    batch = random_batch(variant.batch, short_window, variant.px, device)
    step = lambda: train_step(model, optimizer, batch)  # noqa: E731
    time_steps(step, device, probes - 1)
    _, seconds = time_steps(step, device, 1)
    return seconds * variant.window / short_window


def choose_train_window(
    variant: Variant,
    model: SpotterModule,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    step_limit: float | None,
    short_window: int,
) -> tuple[int, float | None]:
    """The window to time training on, and the estimated seconds of a full-window step when
    there is a limit: a full step estimated over it is timed on the short window instead."""
    if step_limit is None or variant.window <= short_window:
        return variant.window, None
    estimate = estimate_full_step(variant, model, optimizer, device, short_window)
    return (short_window if estimate > step_limit else variant.window), estimate


def train_rate(
    variant: Variant,
    model: SpotterModule,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    window: int,
    timing: dict,
) -> dict:
    """Training frames/s on `window`-frame windows, after warm-up steps on that very shape."""
    model.train()
    batch = random_batch(variant.batch, window, variant.px, device)
    step = lambda: train_step(model, optimizer, batch)  # noqa: E731
    time_steps(step, device, timing["warmup"])
    steps, seconds = time_steps(step, device, timing["steps"], timing["seconds"])
    return {
        "train_window": window,
        "train_steps": steps,
        "train_seconds_per_step": seconds / steps,
        "train_frames_per_s": variant.batch * window * steps / seconds,
    }


def infer_rate(variant: Variant, model: SpotterModule, device: torch.device, timing: dict) -> dict:
    """Inference frames/s (eval mode, no gradients) on full windows, after warm-up."""
    model.eval()
    batch = random_batch(variant.batch, variant.window, variant.px, device)
    step = lambda: infer_step(model, batch)  # noqa: E731
    time_steps(step, device, timing["warmup"])
    steps, seconds = time_steps(step, device, timing["steps"], timing["seconds"])
    return {
        "infer_steps": steps,
        "infer_frames_per_s": variant.batch * variant.window * steps / seconds,
    }


UNTIMED = dict.fromkeys(
    ("full_step_seconds_estimate", "train_window", "train_steps", "train_seconds_per_step",
     "train_frames_per_s", "infer_steps", "infer_frames_per_s")
)  # fmt: skip


def describe(variant: Variant, model: SpotterModule) -> dict:
    """A row's fixed part: the variant, its backbone options and neck, its parameter counts."""
    row = {**asdict(variant), "backbone": backbone_options(variant.config)}
    return row | {"neck": dict(NECKS[variant.scale]), "in_chans": IN_CHANS, **param_counts(model)}


def bench_variant(
    variant: Variant,
    device: torch.device,
    *,
    warmup: int = 2,
    steps: int = 2,
    seconds: float = 0.0,
    step_limit: float | None = None,
    short_window: int = SHORT_WINDOW,
) -> dict:
    """One row: the variant, its parameter counts, training and inference frames/s (at least
    `steps` timed steps and `seconds`, after `warmup` steps)."""
    torch.manual_seed(0)
    model = build_model(variant, device)
    row = describe(variant, model)
    optimizer = model.configure_optimizers()
    window, estimate = choose_train_window(
        variant, model, optimizer, device, step_limit, short_window
    )
    timing = {"warmup": warmup, "steps": steps, "seconds": seconds}
    row |= {"full_step_seconds_estimate": estimate}
    row |= train_rate(variant, model, optimizer, device, window, timing)
    return row | infer_rate(variant, model, device, timing)


def count_variant(variant: Variant) -> dict:
    """A row with parameter counts only (the quick run does not time paper-size models)."""
    return describe(variant, build_model(variant, torch.device("cpu"))) | UNTIMED


def bench_throughput(
    variant_list: Sequence[Variant],
    *,
    device: torch.device | None = None,
    timing: Mapping[str, dict | None] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """A row per variant. `timing` maps a scale (paper, cpu) to bench_variant's keyword
    arguments, or to None for parameter counts only; a scale it lacks gets the defaults."""
    device = device or pick_device()
    rows = []
    for variant in variant_list:
        options = (timing or {}).get(variant.scale, {})
        say(log, f"throughput: {variant.config} {variant.px}² × {variant.window} × {variant.batch}")
        rows.append(
            count_variant(variant) if options is None else bench_variant(variant, device, **options)
        )
        gc.collect()  # the paper-size models' activations are GBs: free them before the next
    return rows


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class MemoryBudget:
    """The two mock datasets: `large` holds 10× the frames of `small`."""

    small: MockSpec
    large: MockSpec


def frames_of(spec: MockSpec) -> int:
    return spec.subjects * spec.videos_per_subject * spec.frames


def make_cache(
    spec: MockSpec, tmp: Path, name: str, workers: int, settings: Settings = CACHE_SETTINGS
) -> Path:
    """A mock CAS(ME)² dataset, preprocessed into its own cache; the cache's folder. Needs the
    caller under `if __name__ == "__main__":` when workers > 1 (workers are spawned)."""
    root = write_mock(spec, tmp / f"mock-{name}", workers=workers)
    report = preprocess(
        load_annotations(spec.dataset, root), root, tmp / f"cache-{name}", settings,
        workers=workers, progress=False,
    )  # fmt: skip
    if report.failed:
        raise RuntimeError(f"preprocessing the {name} mock failed:\n{report.summary()}")
    return report.folder


def disk_bytes(folder: Path) -> int:
    """Bytes of every file under `folder`."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def proc_memory() -> dict[str, float | None]:
    """This process's memory from /proc (None elsewhere), MB: its peak RSS so far (VmHWM, which
    starts afresh at exec, unlike ru_maxrss) and its RSS now, split into anonymous (heap,
    tensors) and file-backed (memory-mapped cache pages, libraries)."""
    fields = {"VmHWM:": "peak_rss_mb", "RssAnon:": "rss_anon_mb", "RssFile:": "rss_file_mb"}
    found: dict[str, float | None] = dict.fromkeys(fields.values())
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            parts = line.split()
            if parts and parts[0] in fields:
                found[fields[parts[0]]] = int(parts[1]) / 1024
    except OSError:
        pass
    return found


def train_one_epoch(cache_folder: str | Path) -> dict:
    """One epoch (training + validation) of the CPU-size VoVNet on a cache, as `mespot-train`
    runs it, with this process's memory before and after. Run it in a fresh process."""
    torch.set_num_threads(os.cpu_count() or 1)
    pl.seed_everything(0, verbose=False)
    subjects = sorted({v.subject for v in read_cache(cache_folder)})
    dm = SpottingDataModule(str(cache_folder), subjects[0], **EPOCH)
    dm.setup()
    model = SpotterModule(IN_CHANS, backbone_options("vovnet_small"), SMALL)
    trainer = pl.Trainer(
        max_epochs=1, accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=str(Path(cache_folder).parent),
    )  # fmt: skip
    before, start = proc_memory()["peak_rss_mb"], time.perf_counter()
    trainer.fit(model, dm)
    after = proc_memory()
    return {
        "seconds": time.perf_counter() - start,
        "train_windows": len(dm.datasets["train"]),
        "val_windows": len(dm.datasets["val"]),
        "frames_read": sum(v.n_frames for s in ("train", "val") for v in dm.videos[s]),
        "proc_peak_before_fit_mb": before,
        "proc_peak_mb": after.pop("peak_rss_mb"),
        **{f"{k}_at_end": v for k, v in after.items()},
    }


def epoch_in_fresh_process(cache_folder: Path) -> dict:
    """train_one_epoch in a new Python, whose peak RSS is the epoch's own."""
    peak, epoch = common.run_child(
        "mespot.bench.training", ["--epoch-of", str(cache_folder)], cache_folder.parent
    )
    return {"peak_rss_mb": peak, **epoch}


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def bench_memory(budget: MemoryBudget, tmp: Path, workers: int, log=None) -> dict:
    """Peak RSS of a training epoch on the small and the large mock, and large ÷ small."""
    runs = {}
    for name, spec in (("small", budget.small), ("large", budget.large)):
        say(log, f"memory: mock {name} ({frames_of(spec)} frames), preprocess, one epoch")
        cache_folder = make_cache(spec, tmp, name, workers)
        runs[name] = {
            "mock": {**asdict(spec), "total_frames": frames_of(spec)},
            "cache_mb": disk_bytes(cache_folder) / 2**20,
            **epoch_in_fresh_process(cache_folder),
        }
    return {
        "epoch": dict(EPOCH),
        "cache_settings": asdict(CACHE_SETTINGS),
        "runs": runs,
        "peak_ratio": runs["large"]["peak_rss_mb"] / runs["small"]["peak_rss_mb"],
        "proc_peak_ratio": ratio(runs["large"]["proc_peak_mb"], runs["small"]["proc_peak_mb"]),
        "frames_ratio": frames_of(budget.large) / frames_of(budget.small),
    }


# --------------------------------------------------------------------------- loader

# the layouts a GPU fold reads: the paper's (frame + flow) and the accuracy recipe's
# (conf/experiment/bench_accuracy.yaml: frame, differences over 2 and 8 frames, distance from
# the face at rest over 300 frames, flow)
LAYOUTS = {
    "paper": InputSpec(),
    "recipe": InputSpec(frame_diffs=(2, 8), rest_span=300),
}
LOADER_CACHE = Settings(size=PAPER_PX, flow_method="dis", detector="none")
LOADER_BATCH, LOADER_STRIDE = 32, 64  # the paper's batch; windows of PAPER_WINDOW, half overlap


def part_bytes(batch: dict) -> int:
    """Bytes of a collated batch's tensors: what crosses to the device."""
    return sum(v.numel() * v.element_size() for v in batch.values() if isinstance(v, torch.Tensor))


def loader_rate(cache_folder: Path, inputs: InputSpec, batches: int) -> dict:
    """What one loader worker does for `batches` training batches of the paper's size: read
    each window's parts from the memory-mapped cache, draw its augmentation, collate. One
    thread, no pinning: a worker's own work."""
    dataset = WindowDataset(read_cache(cache_folder), PAPER_WINDOW, LOADER_STRIDE, inputs,
                            WindowAugment(LOADER_STRIDE, seed=0))  # fmt: skip
    order = torch.randint(len(dataset), (batches * LOADER_BATCH,), generator=torch.Generator())
    first_of_each_video = {v: i for i, (v, _) in reversed(list(enumerate(dataset.items)))}
    for index in first_of_each_video.values():  # memory maps, faces at rest: once per worker
        dataset[index]
    start = time.perf_counter()
    for b in range(batches):
        batch = collate([dataset[int(i)] for i in order[b * LOADER_BATCH : (b + 1) * LOADER_BATCH]])
    seconds = time.perf_counter() - start
    frames = batches * LOADER_BATCH * PAPER_WINDOW
    return {
        "channels": inputs.channels,
        "batches": batches,
        "seconds": seconds,
        "frames_per_s": frames / seconds,
        "kib_per_frame": part_bytes(batch) / (LOADER_BATCH * PAPER_WINDOW) / 1024,
    }


def bench_loader(spec: MockSpec, batches: int, tmp: Path, log=None) -> dict:
    """loader_rate of each layout on a mock cache at the paper's input size."""
    say(log, f"loader: mock of {frames_of(spec)} frames at {PAPER_PX} px, {batches} batches each")
    cache_folder = make_cache(spec, tmp, "loader", 1, LOADER_CACHE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = {name: loader_rate(cache_folder, inputs, batches) for name, inputs in
                LAYOUTS.items()}  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return {"mock": asdict(spec), "frames": frames_of(spec), "batch": LOADER_BATCH,
            "window": PAPER_WINDOW, "stride": LOADER_STRIDE, "px": PAPER_PX,
            "layouts": rows}  # fmt: skip


# --------------------------------------------------------------------------- report


def environment(device: torch.device) -> dict:
    """What the figures depend on: when, which code, which machine, libraries and device."""
    env = common.environment("torch", "lightning", "timm", "numpy")
    return env | {"device": device_name(device), "torch_threads": torch.get_num_threads()}


def millions(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def window_cell(row: dict) -> str:
    """The timed window, and why when training used a shorter one than inference."""
    if row["train_window"] in (None, row["window"]):
        return str(row["window"])
    return f"{row['train_window']} (train) / {row['window']} (infer)"


def note(row: dict) -> str:
    """Why a row has no timings, or why training was timed on a shorter window."""
    if row["train_window"] is None:
        return "not timed (quick run)"
    if row["train_window"] == row["window"]:
        return ""
    return (
        f"train timed on {row['train_window']} frames: a {row['window']}-frame step would take "
        f"≈ {row['full_step_seconds_estimate']:.0f} s"
    )


def timing_text(scale: str, timing: dict | None) -> str:
    """How one scale's models were timed, in words."""
    label = SCALE_NAMES[scale]
    if timing is None:
        return f"{label}: parameters only."
    text = (
        f"{label}: {plural(timing.get('warmup', 2), 'warm-up step')}, then ≥ "
        f"{plural(timing.get('steps', 2), 'timed step')} and ≥ {timing.get('seconds', 0.0):g} s."
    )
    if timing.get("step_limit") is not None:
        text += (
            f" A training step estimated over {timing['step_limit']:g} s (from a "
            f"{timing['short_window']}-frame step) is timed on {timing['short_window']} frames."
        )
    return text


THROUGHPUT_COLUMNS = ("backbone", "size", "neck", "input", "window", "batch", "params backbone",
                      "neck + head", "total", "train frames/s", "train s/step", "infer frames/s",
                      "note")  # fmt: skip
MEMORY_COLUMNS = ("mock", "subjects × videos × frames", "frames", "cache on disk MB",
                  "train / val windows", "epoch s", "peak RSS MB", "VmHWM before fit MB",
                  "VmHWM after fit MB", "growth MB", "at end: file / anon MB")  # fmt: skip


def throughput_table(rows: Sequence[dict]) -> list[str]:
    """The variants as a markdown table."""
    return common.table(THROUGHPUT_COLUMNS, "lllrrrrrrrrrl", map(throughput_cells, rows))


def throughput_cells(r: dict) -> list[str]:
    options = " ".join(f"{k}={v}" for k, v in r["backbone"].items() if k != "name")
    return [f"{r['config']} ({options})", r["scale"], NECK_NAMES[r["scale"]],
            f"{r['px']}×{r['px']}", window_cell(r), r["batch"], millions(r["params_backbone"]),
            millions(r["params_neck_head"]), millions(r["params_total"]),
            num(r["train_frames_per_s"], 1), num(r["train_seconds_per_step"], 2),
            num(r["infer_frames_per_s"], 1), note(r)]  # fmt: skip


def memory_table(memory: dict) -> list[str]:
    """The two epochs as a markdown table."""
    return common.table(MEMORY_COLUMNS, "llrrrrrrrrr", map(memory_cells, memory["runs"].items()))


def memory_cells(named_run: tuple[str, dict]) -> list[str]:
    name, r = named_run
    m, before, after = r["mock"], r["proc_peak_before_fit_mb"], r["proc_peak_mb"]
    growth = None if before is None or after is None else after - before
    return [name, f"{m['subjects']} × {m['videos_per_subject']} × {m['frames']}",
            m["total_frames"], num(r["cache_mb"], 1),
            f"{r['train_windows']} / {r['val_windows']}", num(r["seconds"], 1),
            f"**{num(r['peak_rss_mb'], 0)}**", num(before, 0), num(after, 0), num(growth, 0),
            f"{num(r['rss_file_mb_at_end'], 0)} / {num(r['rss_anon_mb_at_end'], 0)}"]  # fmt: skip


def memory_section(result: dict) -> list[str]:
    """Peak RSS of an epoch per dataset size and their ratio, or why it is missing."""
    memory = result.get("memory")
    if not memory:
        return [
            "",
            "## Peak memory of a training epoch",
            "",
            f"not measured: {result.get('memory_skipped')}",
        ]
    epoch, small = memory["epoch"], memory["runs"]["small"]["mock"]
    size = memory["cache_settings"]["size"]
    return [
        "",
        "## Peak memory of a training epoch (fresh process each, RSS)",
        "",
        f"Mock {small['dataset']} at {small['size'][0]}×{small['size'][1]}, preprocessed to "
        f"{size}×{size} (DIS flow, no face detector); one epoch (train + validation) of "
        f"vovnet_small + SMALL neck, window {epoch['window']}, stride {epoch['stride']}, batch "
        f"{epoch['batch_size']}, {epoch['val_subjects']} validation subject, "
        f"num_workers={epoch['num_workers']}.",
        "",
        *memory_table(memory),
        "",
        f"Peak RSS large ÷ small: **{memory['peak_ratio']:.2f}** for {memory['frames_ratio']:.0f}× "
        f"the frames (VmHWM after fit: {num(memory.get('proc_peak_ratio'))}).",
        "",
        "Peak RSS = ru_maxrss of the epoch's process, read by a small parent (RUSAGE_CHILDREN): "
        "Linux carries ru_maxrss over exec, so read inside a process started from the (large) "
        "benchmark it would report the benchmark's size. It lies 100-150 MB above the process's "
        "own high-water mark (VmHWM) read right after the epoch: the normal exit (interpreter and "
        "library finalization) adds that, as `import torch` alone shows; with os._exit the gap "
        "vanishes. VmHWM before fit = after imports, "
        "data set-up and model; growth = VmHWM after − before fit: the model's activations and "
        "the cache pages the epoch read. Those pages are memory-mapped and file-backed (`file` at "
        "end): the kernel can drop them, so RAM does not have to hold the dataset.",
    ]


def loader_section(result: dict) -> list[str]:
    """What one loader worker delivers per input layout, or why it is missing."""
    loader = result.get("loader")
    if not loader:
        return ["", "## One loader worker", "", "not measured in this run"]
    rows = [[name, f"{LAYOUTS[name].channels}", f"**{num(r['frames_per_s'], 0)}**",
             num(r["frames_per_s"] / (loader["batch"] * loader["window"]), 2),
             num(r["kib_per_frame"], 1)]
            for name, r in loader["layouts"].items()]  # fmt: skip
    columns = ["input", "channels", "frames/s", "batches/s", "KiB per frame to the device"]
    return [
        "",
        "## One loader worker (paper-size training batches)",
        "",
        *common.table(columns, "lrrrr", rows),
        "",
        f"Batches of {loader['batch']} windows × {loader['window']} frames at "
        f"{loader['px']}×{loader['px']} px (stride {loader['stride']}), read from a memory-mapped "
        f"mock cache of {loader['frames']} frames with the training "
        "augmentation drawn, then collated: one process, one thread, what each loader worker "
        "does. paper = frame + flow; recipe = conf/experiment/bench_accuracy.yaml's inputs "
        "(frame, differences over 2 and 8 frames, distance from the face at rest, flow). Frames "
        "and flow cross to the device as the cache holds them (uint8, float16), the distance "
        "from the face at rest as float32; the other channels are built there "
        "(InputSpec.assemble). A fold that trains at R frames/s needs about R ÷ frames/s "
        "workers.",
    ]


def markdown(result: dict) -> str:
    """The report: header, throughput table, loader table, memory table, how the numbers were
    made."""
    env, throughput = result["environment"], result["throughput"]
    libraries = f"torch {env['torch']} on {env['device']} ({env['torch_threads']} threads)"
    out = [
        "# Training benchmark",
        "",
        common.header(env, libraries, result["quick"]),
        "",
        "## Model size and throughput",
        "",
        *throughput_table(throughput["rows"]),
        "",
        f"Input: {IN_CHANS} channels (grey frame + 2 flow). Train = forward + loss (target "
        "assignment, focal + L1 + IoU) + backward + Adam step on random input with one random ME "
        "and one MaE per window; infer = eval forward under torch.no_grad. frames/s = batch × "
        "window × steps ÷ seconds. "
        + " ".join(timing_text(scale, t) for scale, t in throughput["timing"].items()),
    ]
    out += [*loader_section(result), *memory_section(result), "",
            *common.made_by(result["command"])]  # fmt: skip
    return "\n".join(out)


# --------------------------------------------------------------------------- command line


@dataclass(frozen=True)
class Budget:
    """How much work each part gets: the full run and the smoke test differ only here."""

    timing: dict[str, dict | None]  # bench_throughput's: per scale, None = parameters only
    loader: tuple[MockSpec, int]  # the mock, and the batches timed per layout
    memory: MemoryBudget


def mock(subjects: int, videos: int, frames: int) -> MockSpec:
    return MockSpec("casme2", subjects, videos, frames, size=(96, 72))


FULL = Budget(
    timing={
        "paper": {"warmup": 2, "steps": 2, "step_limit": STEP_LIMIT, "short_window": SHORT_WINDOW},
        "cpu": {"warmup": 3, "steps": 3, "seconds": 3.0},
    },
    loader=(mock(1, 2, 900), 8),
    memory=MemoryBudget(mock(3, 1, 300), mock(3, 2, 1500)),
)
QUICK = Budget(
    timing={"paper": None, "cpu": {"warmup": 1, "steps": 1}},  # a paper-size first step: ~10 s
    loader=(mock(1, 1, 300), 1),
    memory=MemoryBudget(mock(3, 1, 200), mock(3, 2, 1000)),
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common.arguments("training", __doc__, quick="a smoke test: tiny budget, < 1 min")
    parser.add_argument("--no-memory", action="store_true", help="throughput figures only")
    parser.add_argument("--epoch-of", type=Path, help=argparse.SUPPRESS)  # the memory child
    return parser.parse_args(argv)


def run_memory_part(result: dict, budget: Budget) -> bool:
    """Peak RSS into result. False when it could not be measured: the throughput figures are
    still worth writing."""
    with tempfile.TemporaryDirectory(prefix="mespot-bench-") as tmp:
        try:
            # one process: pool workers would each re-import this module (torch, Lightning),
            # which takes longer than rendering and preprocessing these small mocks
            result["memory"] = bench_memory(budget.memory, Path(tmp), 1, log)
        except (RuntimeError, OSError) as e:
            result["memory_skipped"] = f"failed: {e}"
            log(result["memory_skipped"])
            return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.epoch_of:
        return common.answer_parent(train_one_epoch(args.epoch_of))
    torch.set_num_threads(os.cpu_count() or 1)
    budget = QUICK if args.quick else FULL
    start, device = time.perf_counter(), pick_device()
    result = {"command": common.command_line("training", argv), "quick": args.quick,
              "environment": environment(device)}  # fmt: skip
    rows = bench_throughput(variants(), device=device, timing=budget.timing, log=log)
    result["throughput"] = {"timing": budget.timing, "rows": rows}
    with tempfile.TemporaryDirectory(prefix="mespot-bench-") as tmp:
        result["loader"] = bench_loader(*budget.loader, Path(tmp), log)
    if args.no_memory:
        result["memory_skipped"] = "not asked for (--no-memory)"
    memory_ok = args.no_memory or run_memory_part(result, budget)
    common.finish(result, start, common.out_folder(args), "training", markdown)
    print(markdown(result))
    return 0 if memory_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
