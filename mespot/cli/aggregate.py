"""mespot-aggregate SWEEP_DIR: the folds' metrics.json files → summary.json + summary.md.

Runs by itself at the end of `mespot-train -m`; run it again after re-running a fold or
copying in folds finished elsewhere. Exit status 1 when a fold is missing or failed.
"""

from __future__ import annotations

import argparse

from mespot.cli.common import exit_on_user_error
from mespot.loso import report


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mespot-aggregate", description=__doc__.split("\n")[0])
    parser.add_argument("sweep", help="a mespot-train multirun folder (holds multirun.yaml)")
    parser.add_argument("--no-wandb", action="store_true",
                        help="do not log the table to W&B even if the folds did")  # fmt: skip
    args = parser.parse_args(argv)
    if not report(args.sweep, use_wandb=not args.no_wandb).complete:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
