"""Weights & Biases around LOSO sweeps: one run per fold, one aggregate run, every run finished.

Runs are offline by default (`wandb sync <save_dir>/wandb/offline-run-*` uploads them later). A
fold's run is grouped with the other folds of the same sweep, so two launches of one experiment
stay apart; `logger.wandb.group=…` picks another group.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode


def default_group(name: str) -> str:
    """`<name>@<sweep folder>` inside a multirun, `<name>` for a single run."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"{name}@{Path(HydraConfig.get().sweep.dir).name}"
    return name


def finish_run(failed: bool) -> None:
    """End the W&B run this process has open (marked failed or not), so the next job in the
    same process — the basic launcher runs every fold in one — starts a run of its own."""
    wandb = sys.modules.get("wandb")  # never import wandb only to find that no run is open
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


def log_summary(summary, settings: dict) -> None:
    """One `job_type=aggregate` run in the folds' project and group, holding the final table."""
    import wandb

    columns = ["experiment", "folds_done", "folds_expected", "mae_f1", "me_f1", "overall_f1",
               "overall_tp", "overall_fp", "overall_fn"]  # fmt: skip
    rows = []
    for e in summary.experiments:
        o = e.total()["overall"]
        rows.append([e.label, len(e.done), len(e.expected), e.f1("mae"), e.f1("me"),
                     e.f1("overall"), o.tp, o.fp, o.fn])  # fmt: skip
    run = wandb.init(
        project=settings.get("project"),
        entity=settings.get("entity"),
        group=settings.get("group"),
        job_type="aggregate",
        name=f"{settings.get('group') or summary.name}-summary",
        dir=str(summary.sweep),
        mode="offline" if settings.get("offline", True) else "online",
        config={"sweep": str(summary.sweep), "matching": summary.matching, "iou": summary.iou},
        reinit="finish_previous",
    )
    try:
        run.log({"summary": wandb.Table(columns=columns, data=rows)})
        if len(rows) == 1:
            run.summary.update(dict(zip(columns[1:], rows[0][1:], strict=True)))
    finally:
        run.finish(exit_code=0 if summary.complete else 1)
