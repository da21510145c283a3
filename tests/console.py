"""Running mespot's console scripts as a user does, and what a user's mistake must look like."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def run(command: str, *args, cwd, timeout: float = 300, env: dict | None = None):
    """The installed console script `command` (e.g. "mespot-train") with these arguments."""
    return subprocess.run([str(BIN / command), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)  # fmt: skip


def assert_user_error(result, *fragments: str, code: int = 2) -> str:
    """Exit status `code`, no traceback, and exactly one `error: …` line on stderr that holds
    every fragment; returns that line."""
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


# What a user need not read: Lightning's adverts and accelerator census, and warnings that no
# setting of theirs caused (mespot/cli/train.py, quiet_console).
NOISE = ("💡 Tip", "GPU available", "TPU available", "LeafSpec", "does not have many workers",
         "smaller than the logging interval")  # fmt: skip


def assert_quiet(result) -> None:
    """None of Lightning's noise in the command's output."""
    console = result.stdout + result.stderr
    for line in NOISE:
        assert line not in console, (line, console[-3000:])
