"""A mespot-train run folder: what a finished or failed run leaves there, and how a later run
into the same folder keeps an earlier one's results from passing for its own.

A finished run writes predictions.csv, then metrics.json, which holds predictions.csv's SHA-1:
counts and predictions that do not belong together (one of them from another run, or edited)
are found by anyone who reads them (`check_results`). A failed run writes failed.txt. A run that
starts in a folder holding an earlier run's results moves them into previous/<n>/ first, so that
if it fails, nothing there can be credited to it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pandas as pd

from mespot.files import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.csv"
METRICS_FILE = "metrics.json"
FAILED_FILE = "failed.txt"
PREVIOUS_DIR = "previous"
CHECKPOINTS = "checkpoints"  # the run folder's checkpoint folder (conf/callbacks/default.yaml)
RECORD = "resumed.json"  # each resume of the run (mespot/resume.py)
# an earlier run's outputs (the Hydra job's .hydra/ and log belong to the folder, not the run)
OUTPUTS = (METRICS_FILE, PREDICTIONS_FILE, FAILED_FILE, "throughput.json", "config.yaml",
           RECORD, CHECKPOINTS, "csv")  # fmt: skip


def write_results(out: Path, predictions: pd.DataFrame, metrics: dict) -> None:
    """predictions.csv, then metrics.json naming it by its SHA-1 (each written atomically)."""
    text = predictions.to_csv(index=False)
    atomic_write_text(out / PREDICTIONS_FILE, text)
    atomic_write_json(out / METRICS_FILE, {**metrics, "predictions_sha1": _sha1(text.encode())})


def check_results(job: Path) -> str | None:
    """Why the results in `job` cannot be trusted (unreadable, or predictions.csv is not the
    file its metrics.json scored), or None."""
    try:
        metrics = json.loads((job / METRICS_FILE).read_text())
        recorded = metrics.get("predictions_sha1") if isinstance(metrics, dict) else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{job / METRICS_FILE} is unreadable ({type(e).__name__}: {e})"
    if recorded is None:
        return None  # written before metrics.json named its predictions
    predictions = job / PREDICTIONS_FILE
    if not predictions.is_file():
        return f"{predictions} is missing (its metrics.json scored one)"
    if _sha1(predictions.read_bytes()) != recorded:
        return f"{predictions} is not the file its metrics.json scored (replaced or edited)"
    return None


def write_failed(out: Path, text: str) -> None:
    """failed.txt: why the run failed (its last line is what summaries show)."""
    try:
        atomic_write_text(out / FAILED_FILE, text.rstrip() + "\n")
    except OSError as e:  # a folder that cannot be written has the run's error to show instead
        log.error("could not write %s: %s", out / FAILED_FILE, e)


def set_aside_previous(out: Path, keep: tuple[str, ...] = ()) -> Path | None:
    """Move an earlier run's outputs (all but `keep`) into previous/<n>/; where, or None."""
    found = [name for name in OUTPUTS if name not in keep and (out / name).exists()]
    if not found:
        return None
    n = 1
    while (out / PREVIOUS_DIR / str(n)).exists():
        n += 1
    target = out / PREVIOUS_DIR / str(n)
    target.mkdir(parents=True)
    for name in found:
        os.replace(out / name, target / name)
    log.warning("%s held an earlier run's results: moved to %s", out, target)
    return target


def run_folder(ckpt_path: str | None, default: str) -> str:
    """`hydra.run.dir`: the folder of the run whose `checkpoints/` holds `ckpt_path`, or
    `default` (a new run folder) when there is no checkpoint or it lies elsewhere (then
    `check` says why that cannot resume)."""
    if ckpt_path:
        run = Path(ckpt_path).absolute().parent.parent
        if Path(ckpt_path).absolute().parent.name == CHECKPOINTS and (run / ".hydra").is_dir():
            return str(run)
    return default


def hydra_subdir(ckpt_path: str | None) -> str | None:
    """`hydra.output_subdir`: `.hydra`, except in a resumed run, whose folder keeps the
    starting command's (the resume's goes to resumed.json)."""
    return None if ckpt_path else ".hydra"


def kept_in(out: Path, ckpt_path: str | None) -> tuple[str, ...]:
    """What a run folder keeps of its earlier run's outputs when this run resumes that one
    (mespot.runs.set_aside_previous moves the rest aside): its checkpoints, the logger's curves
    and the record of resumes it goes on writing, and its config.yaml (rewritten once the
    resume is checked)."""
    if ckpt_path and Path(ckpt_path).resolve().parent == (out / CHECKPOINTS).resolve():
        return (CHECKPOINTS, "csv", RECORD, "config.yaml")
    return ()


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()
