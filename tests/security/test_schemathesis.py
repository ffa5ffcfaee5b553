"""Schemathesis (a fuzzer nobody here wrote) against the running API: a real uvicorn on loopback, on the embedded
and on the devnet stack (its own Hardhat node and Kubo daemon), seeded with a finalized and an open round.

Every check runs (``--checks all``: no 5xx, status codes, content types, headers and bodies as the OpenAPI
document declares them, negative data rejected, Allow headers, ignored auth, use after free, ...), through all
four phases including the stateful one, which follows the document's links (api/openapi.py). One check is left
out, ``positive_data_acceptance``: it expects every schema-valid request to be accepted, and here validity also
depends on what a schema cannot state: a signature that verifies, the chain's state (a round that is open, a
participant that is registered) and rules across fields (reject_norm_ratio >= max_norm_ratio); those answers are
declared 400/403/404/409 instead. The run is bounded (examples per operation, a fixed seed) to fit CI;
docs/security.md gives the unbounded command.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedledger.devnet import Devnet


SEED = "20261204"


def run_schemathesis(server: Any, report_dir: Path, *, max_examples: int) -> tuple[int, str, ET.Element]:
    proc = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json", "--checks", "all",
         "--exclude-checks", "positive_data_acceptance", "--max-examples", str(max_examples), "--seed", SEED,
         "--workers", "1", "--request-timeout", "60", "-H", f"Authorization: Bearer {server.token}",
         "--report", "junit", "--report-dir", str(report_dir), "--no-color"],
        capture_output=True, text=True, timeout=1200,
    )
    (report,) = report_dir.glob("junit-*.xml")
    return proc.returncode, proc.stdout + proc.stderr, ET.parse(report).getroot()


def assert_clean(returncode: int, output: str, junit: ET.Element) -> None:
    cases = junit.findall(".//testcase")
    bad = [c.get("name") for c in cases if c.find("failure") is not None or c.find("error") is not None]
    assert len(cases) >= 20, f"only {len(cases)} operations tested:\n{output[-3000:]}"  # the API has 22
    assert bad == [], output[-6000:]
    assert returncode == 0, output[-6000:]
    assert "5xx" not in output.split("SUMMARY")[-1]


def test_schemathesis_embedded_stack(api_server: Callable, seed: Callable, tmp_path: Path) -> None:
    server = api_server({"FEDLEDGER_STACK": "embedded", "FEDLEDGER_STATE_DIR": str(tmp_path / "state")})
    seed(server)
    assert_clean(*run_schemathesis(server, tmp_path / "report", max_examples=25))
    assert server.proc.poll() is None, "the API died under the fuzzer"


def test_schemathesis_devnet_stack(own_devnet: Devnet, api_server: Callable, seed: Callable, tmp_path: Path) -> None:
    server = api_server({"FEDLEDGER_STACK": "devnet", "FEDLEDGER_DEVNET_DIR": str(own_devnet.cfg.dir),
                         "FEDLEDGER_DEVNET_SEED": str(own_devnet.cfg.seed)})
    seed(server, label="security-devnet")
    assert_clean(*run_schemathesis(server, tmp_path / "report", max_examples=10))
    assert server.proc.poll() is None, "the API died under the fuzzer"
