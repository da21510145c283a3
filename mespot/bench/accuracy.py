"""Accuracy benchmark: every LOSO fold of a fixed, seeded mock CAS(ME)², per method.

    python -m mespot.bench.accuracy [--quick] [--out DIR] [--data DIR] [--methods M ...]
                                    [--resume]

Generates a mock CAS(ME)² once (mespot-synth; reused while its mock.json matches), preprocesses
it (mespot-preprocess; cached videos are skipped), then runs the full leave-one-subject-out
multirun (`mespot-train -m … data.test_subject=all`, two folds at a time with the joblib
launcher) of each method into its own sweep folder, <data>/runs/<method>, and reads the
summary.json that the multirun writes there. Methods: the non-learned baseline
(experiment=baseline) and the learned spotter at CPU size (conf/experiment/bench_accuracy.yaml)
as VoVNet + flow, VoVNet without flow, ResNet + flow and DenseNet + flow (and, with --methods,
VoVNet + flow with seeds 1 and 2); above them, the chance floor of an input-blind grid of
intervals on the same folds (mespot.bench.chance). Writes experiments/bench/accuracy.json
(every count, per method and subject, with the commands, commit, machine, load and wall
times) and accuracy.md (the Table-4-style table), and prints the table. Exit status 1 when a
method's sweep is incomplete. --resume reads a method's finished sweep instead of running it
again (an interrupted benchmark goes on).
The sweeps (checkpoints included) stay in <data>/runs, not in the results folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mespot.bench import common
from mespot.bench.chance import loso_chance
from mespot.bench.common import (
    REPO,
    console_script,
    f1,
    load_average,
    log,
    num,
    run_logged,
    tail,
)
from mespot.data.adapters import load_annotations
from mespot.intervals import format_thresholds
from mespot.loso import ROW_NAMES

ROWS = ("mae", "me", "overall")


@dataclass(frozen=True)
class Method:
    label: str
    overrides: tuple[str, ...]
    learned: bool = True


LEARNED = "experiment=bench_accuracy"
# The paper's model also runs with two more seeds when asked (they change the initialisation, the
# draws and the validation subject): one seed's F1 can move by 0.1, more than most changes.
METHODS = {
    "baseline": Method("Baseline (MDMD-style optical flow)", ("experiment=baseline",), False),
    "vovnet_flow": Method("VoVNet + flow", (LEARNED,)),
    "vovnet_flow_seed1": Method("VoVNet + flow, seed 1", (LEARNED, "seed=1")),
    "vovnet_flow_seed2": Method("VoVNet + flow, seed 2", (LEARNED, "seed=2")),
    "vovnet_noflow": Method("VoVNet, frames only", (LEARNED, "data.use_flow=false")),
    "resnet_flow": Method("ResNet + flow", (LEARNED, "model/backbone=resnet_small")),
    "densenet_flow": Method("DenseNet + flow", (LEARNED, "model/backbone=densenet_small")),
}
DEFAULT_METHODS = ("baseline", "vovnet_flow", "vovnet_noflow", "resnet_flow", "densenet_flow")


@dataclass(frozen=True)
class Budget:
    """The mock (mespot-synth settings), its preprocessing and the training overrides."""

    synth: dict
    size: int
    flow: str
    align: str  # preprocessing.face.align, for every method
    val_subjects: int  # per fold, for every method: they choose its epoch and thresholds
    learned_overrides: tuple[str, ...] = ()  # on top of conf/experiment/bench_accuracy.yaml
    notes: list[str] = field(default_factory=list)


SYNTH = dict(subjects=6, videos_per_subject=2, frames=600, mae_per_video=3, me_per_video=3, seed=0)
FULL = Budget(
    synth=SYNTH,
    size=64,
    flow="tvl1",
    align="stabilise",
    val_subjects=2,
    notes=[
        "Faces stabilised for every method. Learned methods: a warm-up on the motion energy "
        "alone, then epochs with the backbone, among which the epoch kept, a cosine per phase "
        "(conf/experiment/bench_accuracy.yaml says how many), each window evaluated with its "
        "mirror image (model.test_time=[mirror]); folds two at a time (joblib)."
    ],
)
QUICK = Budget(
    synth=dict(subjects=3, videos_per_subject=1, frames=240, mae_per_video=2, me_per_video=2,
               seed=0),
    size=32,
    flow="dis",
    align="stabilise",
    val_subjects=1,
    learned_overrides=("trainer.max_epochs=2", "model.backbone_warmup=1",
                       "++trainer.limit_train_batches=2",
                       "data.window=64", "data.stride=32"),
    notes=["QUICK: a smoke test, not an accuracy figure"],
)  # fmt: skip


# --------------------------------------------------------------------------- data


def prepare_data(budget: Budget, data: Path) -> dict:
    """The mock in <data>/casme2 (made once) and its cache in <data>/cache: what was done."""
    root, cache = data / "casme2", data / "cache"
    info: dict = {"root": str(root), "cache": str(cache), "synth": budget.synth}
    mock = root / "mock.json"
    if mock.is_file():
        made = json.loads(mock.read_text())
        differs = {k: (made.get(k), v) for k, v in budget.synth.items() if made.get(k) != v}
        if differs:
            raise SystemExit(f"{root} holds another mock {differs}: remove it (rm -rf {root})")
        info["synth_seconds"] = None
        log(f"mock: reusing {root}")
    else:
        if root.exists():  # an unfinished folder (mespot-synth writes mock.json last)
            shutil.rmtree(root)
        settings = [f"{k}={v}" for k, v in budget.synth.items()]
        command = [console_script("mespot-synth"), "data=casme2", f"out={root}", *settings,
                   "workers=2"]  # fmt: skip
        log(f"mock: {' '.join(command[1:])}")
        status, seconds = run_logged(command, data / "logs" / "synth.log")
        if status != 0:
            raise SystemExit(f"mespot-synth failed:\n{tail(data / 'logs' / 'synth.log')}")
        info["synth_seconds"] = seconds
    command = [console_script("mespot-preprocess"), "data=casme2", f"data.root={root}",
               f"paths.cache_dir={cache}", f"size={budget.size}", f"flow.method={budget.flow}",
               f"face.align={budget.align}", "progress=false"]  # fmt: skip
    log(f"preprocess: {' '.join(command[1:])}")
    status, seconds = run_logged(command, data / "logs" / "preprocess.log")
    if status != 0:
        raise SystemExit(f"mespot-preprocess failed:\n{tail(data / 'logs' / 'preprocess.log')}")
    info["preprocess"] = {"size": budget.size, "flow": budget.flow, "align": budget.align,
                          "seconds": seconds,
                          "command": " ".join(["mespot-preprocess", *command[1:]])}  # fmt: skip
    return info


# --------------------------------------------------------------------------- methods


def method_command(name: str, budget: Budget, data: Path, sweep: Path) -> list[str]:
    """`mespot-train -m` for every fold of `name`, on the mock in `data`, into `sweep`."""
    method = METHODS[name]
    # the same validation subjects for every method
    shared = [f"data.root={data / 'casme2'}", f"paths.cache_dir={data / 'cache'}",
              f"preprocessing.size={budget.size}", f"preprocessing.flow.method={budget.flow}",
              f"preprocessing.face.align={budget.align}",
              f"data.val_subjects={budget.val_subjects}"]  # fmt: skip
    extra = list(budget.learned_overrides) if method.learned else []
    # two folds at a time, one core each: ~20% faster than one fold on both cores
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    return [console_script("mespot-train"), "-m", *method.overrides, *shared, *extra,
            "data.test_subject=all", *launcher, f"hydra.sweep.dir={sweep}"]  # fmt: skip


RUN_FILE = "bench_run.json"  # in each sweep folder: how the runner ran it (command, time, load)


def reusable(sweep: Path, command: Sequence[str]) -> bool:
    """Whether `sweep` holds a complete summary of a multirun launched with `command`'s overrides
    (the fold list aside: Hydra records it expanded)."""
    summary, launched = sweep / "summary.json", sweep / "multirun.yaml"
    if not (summary.is_file() and launched.is_file()):
        return False
    from omegaconf import OmegaConf

    task = list(OmegaConf.load(launched).hydra.overrides.task)
    wanted = [o for o in command[2:] if not o.startswith(("hydra", "data.test_subject="))]
    return (
        json.loads(summary.read_text())["complete"]
        and [o for o in task if not o.startswith("data.test_subject=")] == wanted
        and composes_as_before(sweep)
    )


def composes_as_before(sweep: Path) -> bool:
    """Whether a finished fold of `sweep` still composes, from its overrides, to the
    configuration it ran with: a recipe edited in conf/ since then gives the same command other
    settings, and its sweep must run again."""
    from omegaconf import OmegaConf

    from mespot.cli.common import compose_train

    fold = next(sweep.glob("*/.hydra/config.yaml"), None)
    if fold is None:
        return False
    now = compose_train(OmegaConf.load(fold.parent / "overrides.yaml"))
    return OmegaConf.to_container(now) == OmegaConf.to_container(OmegaConf.load(fold))


def run_method(name: str, budget: Budget, data: Path, resume: bool = False) -> dict:
    """One method's multirun (from a clean sweep folder) and its summed counts. With `resume`, a
    complete sweep of the same command is read instead of run again."""
    sweep = data / "runs" / name
    command = method_command(name, budget, data, sweep)
    log_path = data / "logs" / f"{name}.log"
    if resume and reusable(sweep, command):
        run = json.loads((sweep / RUN_FILE).read_text()) if (sweep / RUN_FILE).is_file() else {}
        log(f"{name}: reusing the complete sweep {sweep}")
        row = {"method": name, "label": METHODS[name].label, "sweep": str(sweep),
               "command": " ".join(["mespot-train", *command[1:]]), "returncode": 0,
               "seconds": run.get("seconds"), "load_average_start": run.get("load_average_start"),
               "load_average_end": run.get("load_average_end"), "log": str(log_path),
               "reused": True}  # fmt: skip
        return read_summary(row, sweep)
    if sweep.exists():
        shutil.rmtree(sweep)  # a fixed folder: old folds would mix into the summary
    log(f"{name}: {' '.join(command[1:])}  (progress: {log_path})")
    load_start = load_average()
    status, seconds = run_logged(command, log_path)
    row = {"method": name, "label": METHODS[name].label, "sweep": str(sweep),
           "command": " ".join(["mespot-train", *command[1:]]), "returncode": status,
           "seconds": seconds, "load_average_start": load_start,
           "load_average_end": load_average(), "log": str(log_path)}  # fmt: skip
    if sweep.is_dir():
        keys = ("command", "returncode", "seconds", "load_average_start", "load_average_end")
        (sweep / RUN_FILE).write_text(json.dumps({k: row[k] for k in keys}, indent=2) + "\n")
    row = read_summary(row, sweep)
    if row.get("complete") is not None and "error" not in row:
        log(f"{name}: {row['folds_done']}/{row['folds_expected']} folds in {seconds:.0f} s, "
            f"overall F1 {row['overall']['f1']:.4f}")  # fmt: skip
    return row


def read_summary(row: dict, sweep: Path) -> dict:
    """`row` with the counts of the sweep's summary.json (or why there are none)."""
    summary_path = sweep / "summary.json"
    if not summary_path.is_file():
        error = f"no summary.json (exit status {row['returncode']})\n" + tail(Path(row["log"]))
        row.update(complete=False, folds_done=0, folds_expected=None, error=error)
        log(f"{row['method']}: no summary.json (exit status {row['returncode']})")
        return row
    summary = json.loads(summary_path.read_text())
    experiments = summary["experiments"]
    if len(experiments) != 1:
        row.update(complete=False, error=f"{len(experiments)} experiments in {summary_path}")
        return row
    (e,) = experiments
    row.update({k: e[k] for k in ("complete", "folds_done", "folds_expected", "missing", "failed",
                                  *ROWS, "per_subject")})  # fmt: skip
    row.update(experiment=summary["name"], matching=summary["matching"], iou=summary["iou"])
    return row


CHANCE_LABEL = "Chance: a fixed grid of intervals, no frame seen"


def chance_row(data: Path) -> dict:
    """The floor every method must clear (mespot.bench.chance), on the same folds."""
    log("chance: a fixed grid per fold, chosen on the other subjects")
    start = time.perf_counter()
    counts = loso_chance(load_annotations("casme2", data / "casme2"))
    folds = len(counts["grids"])
    return {"method": "chance", "label": CHANCE_LABEL, **counts, "complete": True,
            "folds_done": folds, "folds_expected": folds,
            "seconds": time.perf_counter() - start}  # fmt: skip


# --------------------------------------------------------------------------- report


def _wall(row: dict) -> str:
    """A method's wall time; a reused sweep (--resume) says so."""
    wall = "–" if row["seconds"] is None else f"{row['seconds'] / 60:.1f} min"
    return wall + (" (reused)" if row.get("reused") else "")


def _folds(row: dict) -> str:
    done = f"{row.get('folds_done', 0)}/{row.get('folds_expected') or '?'}"
    return done + ("" if row.get("complete") else " ⚠")


def table(rows: Sequence[dict]) -> list[str]:
    """Table 4's layout: F1 per type and overall, TP/FP/FN summed over folds (overall)."""
    columns = ("method", "MaE F1", "ME F1", "Overall F1", "TP/FP/FN", "folds", "wall time")
    cells = [(r["label"], f1(r, "mae"), f1(r, "me"), f1(r, "overall"), _counts(r.get("overall")),
              _folds(r), _wall(r)) for r in rows]  # fmt: skip
    return common.table(columns, "lrrrrrr", cells)


def _counts(counts: dict | None) -> str:
    return f"{counts['tp']}/{counts['fp']}/{counts['fn']}" if counts else "–"


def counts_table(rows: Sequence[dict]) -> list[str]:
    columns = ("method", "type", "n_pred", "n_gt", "TP", "FP", "FN", "precision", "recall", "F1")
    cells = [(r["label"], ROW_NAMES[key], *_count_cells(r[key])) for r in rows for key in ROWS
             if key in r]  # fmt: skip
    return common.table(columns, "llrrrrrrrr", cells)


def _count_cells(c: dict) -> tuple:
    return (c["n_pred"], c["n_gt"], c["tp"], c["fp"], c["fn"], num(c["precision"], 4),
            num(c["recall"], 4), num(c["f1"], 4))  # fmt: skip


def subjects_table(rows: Sequence[dict]) -> list[str]:
    """Each method's overall counts per test subject, at the thresholds its fold chose."""
    subjects = sorted({s for r in rows for s in r.get("per_subject", {})})
    cells = [(r["label"], *(_subject_cell(r.get("per_subject", {}).get(s)) for s in subjects))
             for r in rows]  # fmt: skip
    return common.table(["method", *subjects], "l" + "r" * len(subjects), cells)


def timings_table(rows: Sequence[dict]) -> list[str]:
    """Each method's wall time beside the load on the machine while it ran."""
    cells = [(r["label"], _wall(r), r["load_average_start"], r["load_average_end"]) for r in rows]
    return common.table(("method", "wall time", "load average at start", "at end"), "lrll", cells)


def _subject_cell(fold: dict | None) -> str:
    if not fold:
        return "–"
    return f"{_counts(fold['overall'])} @ {format_thresholds(fold['thresholds'])}"


def markdown(result: dict) -> str:
    env, budget, data = result["environment"], result["budget"], result["data"]
    s = budget["synth"]
    rows = result["rows"]
    scored = [result["chance"], *rows]
    pre = data["preprocess"]
    lines = [
        "# Accuracy benchmark", "",
        common.header(env, f"torch {env['torch']}, lightning {env['lightning']}", result["quick"]),
        "",
        f"Mock CAS(ME)² (mespot-synth, seed {s['seed']}): {s['subjects']} subjects × "
        f"{s['videos_per_subject']} videos × {s['frames']} frames, {s['mae_per_video']} MaE + "
        f"{s['me_per_video']} ME per video, with blinks, head motion and lighting changes; "
        f"preprocessed at {pre['size']} px with {pre['flow']} flow, face.align="
        f"{pre.get('align', 'none')}. Every leave-one-subject-out "
        "fold per method (each fold picks its epoch and its MaE and ME score thresholds on "
        f"{budget['val_subjects']} validation subject(s)); TP/FP/FN summed over folds, then F1, "
        "strict matching at IoU ≥ 0.5 (the MEGC way).", "",
        *table(scored), "",
        f"{CHANCE_LABEL}: in every video, intervals of one length every so many frames, per "
        "type; each fold picks the length and step that score best on the other subjects "
        "(mespot/bench/chance.py). The mock is dense, so at IoU ≥ 0.5 such a grid already "
        "matches many expressions: a method sees expressions only where it beats this row.", "",
        "TP/FP/FN: both types together. Learned methods: conf/experiment/bench_accuracy.yaml "
        "(CPU sizes: vovnet_small / resnet_small / densenet_small, small neck)"
        + (f" with {' '.join(budget['learned_overrides'])}" if budget["learned_overrides"] else "")
        + "; baseline: conf/experiment/baseline.yaml. " + " ".join(budget["notes"]), "",
        "## Counts", "", *counts_table(scored), "",
        "## Per subject (overall TP/FP/FN @ the score thresholds chosen on validation)", "",
    ]  # fmt: skip
    lines += [*subjects_table(rows), "", "## Timings", "",
              f"Mock: {num(data['synth_seconds'], 0) + ' s' if data['synth_seconds'] else 'reused'}"
              f"; preprocessing: {pre['seconds']:.0f} s; total: {result['seconds'] / 60:.1f} min.",
              "", *timings_table(rows)]  # fmt: skip
    problems = [r for r in rows if not r.get("complete")]
    if problems:
        lines += ["", "## Incomplete", ""]
        lines += [f"- {r['label']}: see {r['log']}" for r in problems]
    lines += ["", "## Commands", "", "```", result["command"], pre["command"]]
    lines += [r["command"] for r in rows] + ["```", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = common.arguments("accuracy", __doc__, quick="a smoke test: 3 subjects, 2 epochs of "
                              "2 batches (1 warm-up), DIS flow at 32 px")  # fmt: skip
    parser.add_argument("--data", type=Path, help="mock, cache and sweeps (default data/bench; "
                        "--quick: <out>/data)")  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="reuse each method's sweep that is "
                        "complete and was launched with the same overrides")  # fmt: skip
    parser.add_argument("--methods", nargs="+", choices=list(METHODS),
                        help=f"methods to run (default: {' '.join(DEFAULT_METHODS)})")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    budget = QUICK if args.quick else FULL
    out_dir = common.out_folder(args)
    data = (args.data or (out_dir / "data" if args.quick else REPO / "data" / "bench")).resolve()
    methods = list(args.methods or DEFAULT_METHODS)
    start = time.perf_counter()
    result = {"command": common.command_line("accuracy", argv), "quick": args.quick,
              "environment": common.environment("torch", "lightning"),
              "budget": {"synth": budget.synth, "size": budget.size, "flow": budget.flow,
                         "align": budget.align, "val_subjects": budget.val_subjects,
                         "learned_overrides": list(budget.learned_overrides),
                         "notes": budget.notes},
              "methods": methods}  # fmt: skip
    result["data"] = prepare_data(budget, data)
    result["rows"] = [run_method(name, budget, data, args.resume) for name in methods]
    result["chance"] = chance_row(data)
    result["complete"] = all(r.get("complete") for r in result["rows"])
    common.finish(result, start, out_dir, "accuracy", markdown)
    print("\n".join(table([result["chance"], *result["rows"]])))
    incomplete = [r["method"] for r in result["rows"] if not r.get("complete")]
    if incomplete:
        log(f"incomplete: {', '.join(incomplete)} (logs in {data / 'logs'})")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
