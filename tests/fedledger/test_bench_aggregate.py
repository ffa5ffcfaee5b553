"""`fedledger bench aggregate --quick --json PATH` runs both measurements and writes the promised keys."""

from __future__ import annotations

import json
from pathlib import Path

from fedledger.cli import main


def test_quick_bench_writes_speed_memory_and_identity(tmp_path: Path) -> None:
    out = tmp_path / "agg.json"
    assert main(["bench", "aggregate", "--quick", "--json", str(out), "--dir", str(tmp_path)]) == 0
    report = json.loads(out.read_text())
    for key in (
        "median_speedup_vs_numpy",
        "bit_identical",
        "stream_peak_rss_mb",
        "stream_bit_identical",
        "np_median_seconds",
        "fast_median_seconds",
        "rule_seconds",
        "reference_rule_seconds",
        "rule_speedup_vs_numpy_median",
        "stream_seconds",
        "weighted_first_pass_vs_first_pass",
    ):
        assert key in report, key
    assert report["bit_identical"] is True
    assert report["weighted_median_bit_identical_vs_reference"] is True
    assert report["stream_bit_identical"] is True
    assert report["stream_big_vs_memory_bit_identical"] is True  # 40 x 20k streamed == the same stack in memory
    assert report["median_speedup_vs_numpy"] > 0
    assert 0 < report["stream_peak_rss_mb"] < 2048
    assert report["stream_statuses"]["ACCEPTED"] > 0 and report["stream_statuses"]["NORM_OUTLIER"] > 0
    assert report["stream_vs_memory_statuses"].keys() >= {"NON_FINITE", "WRONG_SHAPE", "BAD_FORMAT", "FREE_RIDE"}
    assert report["stream_vs_memory_statuses"]["FREE_RIDE"] == 2
    assert not list(tmp_path.glob("fedledger-bench-agg-*"))  # the update files are cleaned up
