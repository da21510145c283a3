"""Leave-one-subject-out at scale: read the folds of a sweep folder and sum them into one table.

Each fold (a Hydra job folder holding `.hydra/`) writes metrics.json when it finishes and
failed.txt when it fails. Aggregation never asks the jobs for return values (Hydra hands none to
`on_multirun_end`), so folds run anywhere — sequentially, in parallel, on a cluster, re-run alone
or copied in from another machine — and the sweep folder alone decides the table. TP/FP/FN are
summed over folds before F1 (the MEGC way). Jobs that differ in anything but the test subject
(an ablation grid) are separate experiments, each with its own table.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mespot.errors import UserError
from mespot.files import atomic_write_json, atomic_write_text
from mespot.intervals import TYPES, format_thresholds
from mespot.metrics import Counts
from mespot.runs import FAILED_FILE, METRICS_FILE, check_results

log = logging.getLogger(__name__)

FOLD_KEY = "data.test_subject"
ALL_FOLDS = "all"
ROWS = (*TYPES, "overall")
ROW_NAMES = {"mae": "MaE", "me": "ME", "overall": "Overall"}


@dataclass
class Fold:
    """One job folder: the subject it tests and, when it finished, its counts."""

    job: str  # folder, relative to the sweep folder
    subject: str
    settings: tuple[str, ...]  # its command-line overrides, without the fold and hydra.*
    counts: dict[str, Counts] | None  # per type; None while unfinished or failed
    thresholds: dict[str, float] | None = None  # per type
    error: str | None = None  # failed.txt's last line, or why there are no metrics
    rule: tuple[str, float] | None = None  # (matching, IoU) it was scored with
    finished: float = 0.0  # metrics.json's mtime: the newest of two runs of a fold wins
    corrupt: bool = False  # its results are unreadable, or do not belong together
    missed: int = 0  # expressions of uncached videos counted as missed (data.allow_uncached)


@dataclass
class Experiment:
    """The folds of one setting (one cell of a grid): their sum and what is missing."""

    label: str
    settings: tuple[str, ...]
    expected: list[str]
    folds: dict[str, Fold] = field(default_factory=dict)  # subject → the fold that counts
    duplicates: list[str] = field(default_factory=list)  # job folders superseded by newer runs

    @property
    def done(self) -> list[Fold]:
        return [f for f in self.folds.values() if f.counts is not None]

    @property
    def failed(self) -> list[Fold]:
        return [f for f in self.folds.values() if f.counts is None]

    @property
    def missing(self) -> list[str]:
        return [s for s in self.expected if s not in self.folds]

    @property
    def complete(self) -> bool:
        return not self.failed and not self.missing

    def f1(self, row: str) -> float | None:
        """The summed F1 of `row` (mae, me, overall); None with no fold done (not 0: nothing
        was spotted, and nothing was measured either)."""
        return self.total()[row].f1 if self.done else None

    def total(self) -> dict[str, Counts]:
        sums = {t: sum((f.counts[t] for f in self.done), Counts()) for t in TYPES}
        return {**sums, "overall": sums["mae"] + sums["me"]}

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "settings": list(self.settings),
            "complete": self.complete,
            "folds_expected": len(self.expected),
            "folds_done": len(self.done),
            "missing": self.missing,
            "failed": {f.subject: {"job": f.job, "error": f.error} for f in self.failed},
            "duplicates": self.duplicates,
            **{row: c.as_dict() for row, c in self.total().items()},
            "per_subject": {
                f.subject: {"job": f.job, "thresholds": f.thresholds,
                            **{row: c.as_dict() for row, c in _with_overall(f.counts).items()}}
                for f in sorted(self.done, key=lambda f: f.subject)
            },
        }  # fmt: skip


@dataclass
class Summary:
    sweep: Path
    name: str
    matching: str
    iou: float
    experiments: list[Experiment]

    @property
    def complete(self) -> bool:
        return all(e.complete for e in self.experiments)

    def to_dict(self) -> dict:
        return {"sweep": str(self.sweep), "name": self.name, "matching": self.matching,
                "iou": self.iou, "complete": self.complete,
                "experiments": [e.to_dict() for e in self.experiments]}  # fmt: skip

    def markdown(self) -> str:
        """The paper's Table 4 layout, then counts, per-subject rows and what is missing."""
        lines = [f"# {self.name}: leave-one-subject-out summary", "",
                 f"Sweep `{self.sweep}`; {self.matching} matching at IoU ≥ {self.iou}; TP/FP/FN "
                 "summed over folds, then F1.", "",
                 "| Experiment | folds | MaE F1 | ME F1 | Overall F1 |",
                 "|---|---|---|---|---|"]  # fmt: skip
        for e in self.experiments:
            folds = f"{len(e.done)}/{len(e.expected)}" + ("" if e.complete else " ⚠")
            lines.append(f"| {e.label} | {folds} | " + " | ".join(_f1s(e)) + " |")
        for e in self.experiments:
            lines += ["", f"## {e.label}", "", *_counts_table(e.total()), ""]
            lines += _problems(e, self.sweep)
            lines += ["| Subject | job | thresholds | MaE TP/FP/FN | ME TP/FP/FN | Overall F1 |",
                      "|---|---|---|---|---|---|"]  # fmt: skip
            for f in sorted(e.done, key=lambda f: f.subject):
                c = _with_overall(f.counts)
                lines.append(f"| {f.subject} | {f.job} | {format_thresholds(f.thresholds)} | "
                             f"{_tpfpfn(c['mae'])} | {_tpfpfn(c['me'])} | "
                             f"{c['overall'].f1:.4f} |")  # fmt: skip
        return "\n".join(lines) + "\n"

    def table(self) -> str:
        """A terminal table: one row per experiment, then the fold problems."""
        width = max(len("Experiment"), *(len(e.label) for e in self.experiments))
        lines = [f"{'Experiment':<{width}}  {'folds':>7}  {'MaE F1':>7}  {'ME F1':>7}  "
                 f"{'Overall F1':>10}"]  # fmt: skip
        for e in self.experiments:
            folds = f"{len(e.done)}/{len(e.expected)}"
            mae, me, overall = _f1s(e)
            lines.append(f"{e.label:<{width}}  {folds:>7}  {mae:>7}  {me:>7}  {overall:>10}")
        for e in self.experiments:
            lines += [f"{e.label}: {line}" for line in _problems(e, self.sweep, markdown=False)]
        return "\n".join(lines)


def _f1s(e: Experiment) -> list[str]:
    """MaE, ME and overall F1 for a table; a dash each with no fold done."""
    return ["–" if f1 is None else f"{f1:.4f}" for f1 in map(e.f1, ("mae", "me", "overall"))]


def _with_overall(counts: dict[str, Counts]) -> dict[str, Counts]:
    return {**counts, "overall": counts["mae"] + counts["me"]}


def _tpfpfn(c: Counts) -> str:
    return f"{c.tp}/{c.fp}/{c.fn}"


def _counts_table(total: dict[str, Counts]) -> list[str]:
    lines = ["| | n_pred | n_gt | TP | FP | FN | precision | recall | F1 |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row, c in total.items():
        lines.append(f"| {ROW_NAMES[row]} | {c.n_pred} | {c.n_gt} | {c.tp} | {c.fp} | {c.fn} | "
                     f"{c.precision:.4f} | {c.recall:.4f} | {c.f1:.4f} |")  # fmt: skip
    return lines


def _problems(e: Experiment, sweep: Path, markdown: bool = True) -> list[str]:
    """Missing and failed folds, each with the command that re-runs it into the sweep, and
    folds that counted uncached videos' expressions as missed."""
    rerun = " ".join(["mespot-train", *e.settings])
    lines = []
    for subject in e.missing:
        lines.append(f"MISSING fold {subject}: re-run with `{rerun} {FOLD_KEY}={subject} "
                     f"hydra.run.dir={sweep / f'rerun-{subject}'}`")  # fmt: skip
    for f in e.failed:
        lines.append(f"FAILED fold {f.subject} (job {f.job}): {f.error}; re-run with `{rerun} "
                     f"{FOLD_KEY}={f.subject} hydra.run.dir={sweep / f.job}`")  # fmt: skip
    for f in e.done:
        if f.missed:
            missed = f"{f.missed} expression(s) of uncached videos count as missed"
            lines.append(f"fold {f.subject}: {missed} (data.allow_uncached; see its metrics.json)")
    for job in e.duplicates:
        lines.append(f"superseded by a newer run of the same fold: job {job}")
    if markdown and lines:
        lines = [f"- {line}" for line in lines] + [""]
    return lines


def read_fold(sweep: Path, job: Path) -> Fold:
    """The fold a job folder ran; its counts when metrics.json exists."""
    hydra_dir = job / ".hydra"
    config = OmegaConf.load(hydra_dir / "config.yaml")
    subject = OmegaConf.select(config, FOLD_KEY)
    if subject is None or subject == "???":
        raise UserError(f"{hydra_dir / 'config.yaml'}: no {FOLD_KEY}; not a mespot-train fold")
    overrides = OmegaConf.to_container(OmegaConf.load(hydra_dir / "overrides.yaml"))
    settings = tuple(sorted(o for o in overrides if not _is_fold_or_hydra(o)))
    fold = Fold(str(job.relative_to(sweep)), str(subject), settings, None)
    metrics = job / METRICS_FILE
    if not metrics.is_file():
        failed = job / FAILED_FILE
        lines = failed.read_text().strip().splitlines() if failed.is_file() else []
        fold.error = lines[-1] if lines else "no metrics.json (still running, or killed)"
        return fold
    problem = check_results(job)
    try:
        result = json.loads(metrics.read_text()) if problem is None else {}
        counts = {t: Counts(result[t]["n_pred"], result[t]["n_gt"], result[t]["tp"])
                  for t in TYPES}  # fmt: skip
        rule = (result["matching"], float(result["iou"]))
    except (KeyError, TypeError, ValueError) as e:
        problem = problem or f"{metrics} is not a mespot metrics.json ({type(e).__name__}: {e})"
    if problem is not None:  # this fold fails; the others still make the summary
        fold.error, fold.corrupt = problem, True
        return fold
    fold.counts, fold.rule, fold.thresholds = counts, rule, result.get("thresholds")
    fold.missed = int(result.get("uncached_expressions_missed", 0))
    fold.finished = metrics.stat().st_mtime
    return fold


def _is_fold_or_hydra(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return key == FOLD_KEY or key.startswith("hydra.") or key.startswith("hydra/")


def expected_folds(sweep: Path) -> list[str] | None:
    """The subjects the sweep was launched with (multirun.yaml), or None without that file."""
    path = sweep / "multirun.yaml"
    if not path.is_file():
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = OmegaConf.load(path).hydra.overrides.task
    parsed = OverridesParser.create().parse_overrides([o for o in task if o.startswith(FOLD_KEY)])
    subjects = []
    for override in parsed:
        values = override.sweep_string_iterator() if override.is_sweep_override() else None
        subjects += list(values) if values is not None else [override.get_value_element_as_str()]
    return subjects or None


def aggregate(sweep: str | Path) -> Summary:
    """Every fold under `sweep`, grouped into experiments, with missing and failed folds named."""
    sweep = Path(sweep)
    if not sweep.is_dir():
        raise UserError(f"{sweep}: no such sweep folder")
    jobs = sorted(p.parent.parent for p in sweep.rglob(".hydra/overrides.yaml"))
    if not jobs:
        raise UserError(f"{sweep}: no mespot-train job folders (with .hydra/) inside")
    folds = [read_fold(sweep, job) for job in jobs]
    launched = expected_folds(sweep)
    varying = _varying(f.settings for f in folds)
    experiments: dict[tuple, Experiment] = {}
    for fold in sorted(folds, key=lambda f: f.finished):  # newest last: it replaces older runs
        e = experiments.get(fold.settings)
        if e is None:
            label = " ".join(o for o in fold.settings if o in varying) or _name(sweep / fold.job)
            e = experiments[fold.settings] = Experiment(label, fold.settings, launched or [])
        if fold.subject in e.folds:
            e.duplicates.append(e.folds[fold.subject].job)
        e.folds[fold.subject] = fold
    for e in experiments.values():
        e.expected += sorted(s for s in e.folds if s not in e.expected)
    rules = {f.rule for f in folds if f.rule is not None}
    if len(rules) > 1:
        raise UserError(f"{sweep}: folds were scored with different rules {sorted(rules)}")
    matching, iou = next(iter(rules), ("strict", 0.5))
    return Summary(sweep, _name(jobs[0]), matching, iou, list(experiments.values()))


def _varying(settings) -> set[str]:
    """The overrides that not every job shares: what tells grid cells apart."""
    settings = [set(s) for s in settings]
    return set.union(*settings) - set.intersection(*settings)


def _name(job: Path) -> str:
    return str(OmegaConf.load(job / ".hydra" / "config.yaml").get("name") or "mespot")


def write_summary(summary: Summary) -> tuple[Path, Path]:
    """summary.json and summary.md in the sweep folder (atomic: never a half-written table)."""
    json_path, md_path = summary.sweep / "summary.json", summary.sweep / "summary.md"
    atomic_write_json(json_path, summary.to_dict())
    atomic_write_text(md_path, summary.markdown())
    return json_path, md_path


def report(sweep: str | Path, use_wandb: bool = True) -> Summary:
    """Aggregate, write summary.json/.md, print the table; log it to W&B if the folds did."""
    summary = aggregate(sweep)
    _, md_path = write_summary(summary)
    print(summary.table(), f"\n(full table: {md_path})", sep="\n", flush=True)
    settings = _wandb_settings(summary) if use_wandb else None
    if settings is not None:
        from mespot import tracking

        tracking.log_summary(summary, settings)
    return summary


def _wandb_settings(summary: Summary) -> dict | None:
    """The W&B logger settings of a finished fold (its resolved config.yaml), if it had one."""
    for e in summary.experiments:
        for f in e.done:
            path = summary.sweep / f.job / "config.yaml"
            if path.is_file():
                node = OmegaConf.select(OmegaConf.load(path), "logger.wandb")
                return OmegaConf.to_container(node) if node is not None else None
    return None


class AggregateFolds(Callback):
    """At the end of `mespot-train -m`: the summed table of the sweep's folds (conf/train.yaml).

    Exits non-zero after writing it when a fold failed or is missing."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if not config.get("test", True):  # a tuning sweep scores no test subject
            return
        if not report(config.hydra.sweep.dir).complete:
            raise SystemExit(1)
