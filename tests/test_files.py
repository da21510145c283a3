"""Atomic writes: complete files with the usual permissions, no temporary files left."""

import os
import stat

from mespot.files import atomic_write_json


def test_results_are_written_with_the_usual_permissions(tmp_path):
    path = atomic_write_json(tmp_path / "metrics.json", {"f1": 0.5})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert path.read_text() == '{\n  "f1": 0.5\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left
