"""Accuracy log, sixth round: the spotter without its backbone, to see what the temporal part
(FPN + head) learns from the motion-energy scores alone.

It patches a copy of mespot/ (the checkout stays untouched) so
that SpotterModule feeds only `model.motion_grid`'s block scores to the FPN, then runs the
benchmark's LOSO sweep with the overrides given:

    python experiments/bench/probes/motion_only.py $PWD/data/exp/motion_only \
        preprocessing.face.align=stabilise 'data.frame_diffs=[2,8]' model.motion_grid=8 \
        trainer.max_epochs=40

A diagnostic, not a model: the backbone is still built (its parameters get no gradient).
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PATCH = [
    ("frames = self._backbone_features(x)", "frames = self.motion(x.float())"),
    ("frames = torch.cat([frames, self.motion(x.float())], dim=1)", "pass"),
    ("TemporalFPN(self.encoder.out_dim + motion_dim, **neck)", "TemporalFPN(motion_dim, **neck)"),
]


def main(sweep_dir: str, *overrides: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for folder in ("mespot", "conf"):  # conf/ beside mespot/: the CLI finds it there
            shutil.copytree(REPO / folder, Path(tmp) / folder)
        (Path(tmp) / "data").symlink_to(REPO / "data")  # the benchmark's mock and cache
        module = Path(tmp) / "mespot" / "module.py"
        text = module.read_text()
        for old, new in PATCH:
            if old not in text:
                raise SystemExit(f"{module}: the patch no longer applies (missing {old!r})")
            text = text.replace(old, new)
        module.write_text(text)
        command = [sys.executable, "-m", "mespot.cli.train", "-m", "experiment=bench_accuracy",
                   "data.test_subject=all", *overrides, f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": tmp}
        return subprocess.run(command, cwd=tmp, env=env, check=False).returncode


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    sys.exit(main(*sys.argv[1:]))
