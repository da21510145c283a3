"""The start-up benchmark on a tiny budget: one command, one run; the report holds its figures
and goes where it is told."""

import json

from mespot.bench import startup as bench


def test_report_holds_every_figure(tmp_path):
    args = ["--rounds", "1", "--commands", "mespot-aggregate", "--out", str(tmp_path)]
    assert bench.main(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["startup.json", "startup.md"]
    saved = json.loads((tmp_path / "startup.json").read_text())
    (row,) = saved["rows"]
    assert row["command"] == "mespot-aggregate" and not row["needs_model"]
    assert 0 < row["min_s"] == row["median_s"] == row["max_s"] < 60
    assert row["cpu_median_s"] > 0 and row["meets_target"] == (row["median_s"] < bench.TARGET)
    assert saved["environment"]["load_average_at_end"] is not None
    assert "| mespot-aggregate | **" in (tmp_path / "startup.md").read_text()
