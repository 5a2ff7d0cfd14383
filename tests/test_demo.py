"""`autoslim-hw demo --quick` end to end: real training, a real ONNX Runtime table, a real
search, real export and single-core timing."""
import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "COLUMNS": "120"}
    r = subprocess.run([sys.executable, "-m", "autoslim_hw", "demo", "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("report.md", "supernet.pt", "search.json", "search_trajectory.png",
                 "search_channels.png", "lut_validation.png", "demo.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "demo.json").read_text())
    assert os.path.isfile(summary["lut"])  # the shipped table (spot-checked on this host) or one profiled here
    search = json.loads((out / "search.json").read_text())
    assert search["status"] == "done" and len(search["targets"]) == 3
    limits = [t["constraints"]["latency_ms"] for t in search["targets"]]
    assert limits == sorted(limits, reverse=True)
    targets = [row for row in summary["rows"] if row["name"].startswith("paper")]
    assert len(targets) == 3
    # each criterion's pick at each target, and the FLOPs-guided search really divided by MACs
    for family, criterion, cost in (("latency-guided", "drop-per-cost", "latency_ms"),
                                    ("flops-guided", "drop-per-cost", "macs")):
        picks = [row for row in summary["rows"] if row["name"].startswith(family)]
        assert len(picks) == 3 and all(r["predicted_ms"] <= lim for r, lim in zip(picks, limits)), picks
        other = json.loads(open(summary["searches"][family]).read())
        assert (other["settings"]["criterion"], other["settings"]["cost"]) == (criterion, cost)
    for row, limit in zip(targets, limits):
        assert row["predicted_ms"] <= limit  # each selected config meets its target, as predicted
        # The exported ONNX file, timed on one core, runs as fast as the table said, within 20%,
        # either as measured or once the machine's drift since the table's build is divided out.
        # The demo times four of the table's own calibration networks beside the picks to
        # measure that drift (a shared CI runner was seen 26% slower in a spell), but anchors
        # from a quick build are themselves noisy (a factor of 0.71 was seen while the picks ran
        # 8% under): each estimate can fail on its own, a table that predicts badly fails both.
        # 20%: networks of 0.1-0.2 ms measure only to 3-10% repeatability on these VMs, and
        # the tables predict them to 6-10% (benchmarks/RESULTS.md, "Small networks").
        # Raw, a gross error (wrong units, the supernet exported, another model's table) would
        # also land outside a factor of two.
        assert 0.5 * row["predicted_ms"] <= row["measured_ms"] <= 2.0 * row["predicted_ms"], row
        # (a table that kept no calibration networks has no drift to divide out)
        estimates = [row["measured_ms"]] + ([] if summary["speed_factor"] is None else [row["at_build_speed_ms"]])
        errors = [abs(m - row["predicted_ms"]) / m for m in estimates]
        assert min(errors) <= 0.20, (row, summary["speed_factor"])
        assert (out / "onnx" / f"{row['name'].replace(' ', '_')}.onnx").is_file()
    report = (out / "report.md").read_text()
    assert "uniform" in report and "| paper 0 |" in report and "| flops-guided 2 |" in report
    assert (out / "demo_families.png").is_file()
