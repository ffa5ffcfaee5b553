"""``fedledger bench privacy --quick``: the accuracy-vs-epsilon table on a tiny grid (the CI size)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedledger import bench_privacy


def test_quick_bench_writes_the_table_and_dp_costs_accuracy(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    bench_privacy.add_arguments(parser)
    args = parser.parse_args(["--quick", "--out", str(tmp_path)])
    assert bench_privacy.run(args) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    rows = {r["epsilon"]: r for r in result["rows"]}
    assert set(rows) == {4.0, None}
    assert result["grid"]["participants"] == 6 and result["grid"]["rounds"] == 2
    private, clear = rows[4.0], rows[None]
    # two rounds at epsilon 4 per round: 8 by the sums, less by RDP composition
    assert 7.9 < private["epsilon_total_basic"] <= 8.0
    assert private["epsilon_total_rdp"] < private["epsilon_total_basic"]
    assert clear["accuracy_platform"] > private["accuracy_platform"] > 0.3  # noise costs accuracy, training still helps
    assert clear["accuracy_fedavg"] > private["accuracy_fedavg"]
    # 6 participants are below rule v4's minimum of third parties for the redundancy test: nobody is grouped
    assert private["honest_grouped_rate"] == clear["honest_grouped_rate"] == 0.0
    table = (tmp_path / "table.md").read_text()
    assert "| 4 |" in table and "| none |" in table and "accuracy, platform rule" in table and "honest grouped" in table
