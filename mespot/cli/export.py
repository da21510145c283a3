"""mespot-export: predictions.csv files, or a LOSO sweep → one MEGC submission file.

    mespot-export predictions=P.csv [predictions=Q.csv …] format=megc|str out=FILE
    mespot-export sweep=logs/train/multiruns/<time> format=megc out=submission.csv

The layouts and every decision behind them are in mespot/export.py.
"""

from __future__ import annotations

import re
import sys

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from mespot.cli.common import CONFIG_PATH, exit_on_user_error
from mespot.errors import UserError
from mespot.export import (
    DEFAULT_TYPES,
    FORMATS,
    export_table,
    parse_types,
    read_predictions,
    sweep_predictions,
    to_csv_text,
)
from mespot.files import atomic_write_text
from mespot.intervals import TYPE_NAMES

REPEATABLE = "predictions"


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
@exit_on_user_error
def _export(cfg: DictConfig) -> None:
    fmt, out = str(cfg["format"]), cfg.out  # first: a missing setting is named before any work
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    files = _as_list(cfg.predictions) or []
    if cfg.sweep is not None:
        found, warnings = sweep_predictions(cfg.sweep, cfg.experiment)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        files += [str(f) for f in found]
    elif cfg.experiment is not None:
        raise UserError("experiment= chooses among the experiments of a sweep: add sweep=DIR")
    predictions = read_predictions(files)
    types = parse_types(_as_list(cfg.types))
    table = export_table(predictions, fmt, types=types, emotion=cfg.emotion)
    atomic_write_text(out, to_csv_text(table))
    kept = types or DEFAULT_TYPES.get(fmt, ())
    counts = ", ".join(f"{TYPE_NAMES[t]} {int((predictions['type'] == t).sum())}" for t in kept)
    print(f"wrote {out}: {len(table)} rows ({counts}) in the {fmt} layout, "
          f"from {len(files)} file(s)")  # fmt: skip


def _as_list(value) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value)
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]


def merge_repeated(argv: list[str], key: str = REPEATABLE) -> list[str]:
    """`key=A key=B` → `key=['A','B']`: Hydra itself would keep only the last one."""
    prefix = f"{key}="
    values = [a[len(prefix) :] for a in argv if a.startswith(prefix)]
    if len(values) < 2:
        return argv
    if any(v.startswith("[") for v in values):
        raise UserError(f"give {key} either as a list ({key}=[A,B]) or repeated, not both")
    quoted = ",".join(_quoted(v) for v in values)
    first = next(i for i, a in enumerate(argv) if a.startswith(prefix))
    rest = [a for a in argv if not a.startswith(prefix)]
    return rest[:first] + [f"{prefix}[{quoted}]"] + rest[first:]


def _quoted(value: str) -> str:
    """A Hydra quoted string: quotes escaped, backslashes doubled only before a quote or the end."""
    value = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    value = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, value)
    return f"'{value}'"


@exit_on_user_error
def _merge_argv() -> None:
    sys.argv[1:] = merge_repeated(sys.argv[1:])


def main() -> None:
    _merge_argv()
    _export()


if __name__ == "__main__":
    main()
