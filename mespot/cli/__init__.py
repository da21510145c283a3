"""The console scripts (`mespot-*`, pyproject.toml), each started through `launch`.

Each command's module imports torch, Hydra or OpenCV, which takes seconds. A Ctrl-C while they
load would break off an import half-way (numpy then refuses to load again, and the user sees a
traceback through the libraries); instead it is held until they have loaded, and the command
stops there with one line and the shell's status for it (130). A Ctrl-C later that no handler
of the command's own answers ends the same way. This module imports nothing heavy.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable

INTERRUPTED = "interrupted: stopped before it finished"


def launch(command: str) -> Callable[[], None]:
    """The console script of `mespot.cli.<command>`: its `main`, imported when called (named
    run_<command> here, apart from the module it imports)."""

    def run() -> None:
        asked: list[int] = []
        held = signal.signal(signal.SIGINT, lambda number, frame: asked.append(number))
        try:
            main = importlib.import_module(f"mespot.cli.{command}").main
        finally:
            signal.signal(signal.SIGINT, held)
        try:
            if asked:
                raise KeyboardInterrupt
            main()
        except KeyboardInterrupt:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":  # as mespot.cli.common.full_errors
                raise
            print(INTERRUPTED, file=sys.stderr)
            raise SystemExit(130) from None

    return run


run_evaluate = launch("evaluate")
run_annotations = launch("annotations")
run_synth = launch("synth")
run_preprocess = launch("preprocess")
run_train = launch("train")
run_aggregate = launch("aggregate")
run_export = launch("export")
run_plot = launch("plot")
run_spot = launch("spot")
