"""``fedledger bench load``, bounded: participants register, upload and submit concurrently over HTTP to a real API
process (uvicorn) on the devnet (Hardhat + Kubo), in both relay modes; what the API accepted is checked against the
chain itself. Timings are reported by the bench, never asserted here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from fedledger.bench_load import MODES, Calls, call, healthy, measure
from fedledger.devnet import Devnet, free_port

PARTICIPANTS = 40
CONCURRENCY = 16
BATCH_SIZE = 16  # two batches fill while participants submit, the rest is posted by the close route


@pytest.fixture(scope="module", params=MODES)
def report(request: pytest.FixtureRequest, devnet: Devnet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work: Path = tmp_path_factory.mktemp(f"load-{request.param}")
    return measure(PARTICIPANTS, mode=request.param, rpc_url=devnet.cfg.rpc_url, ipfs_api=devnet.cfg.ipfs_api,
                   work_dir=work, concurrency=CONCURRENCY, batch_size=BATCH_SIZE, seed=7)


def test_every_participant_is_accepted_without_a_5xx_or_a_transport_error(report: dict[str, Any]) -> None:
    assert report["accepted"] == PARTICIPANTS, report["not_accepted"]
    assert report["http_5xx"] == 0 and report["transport_errors"] == 0, report["endpoints"]
    expected = "201" if report["mode"] == "direct" else "202"
    assert report["endpoints"]["POST /rounds/{id}/submissions"]["statuses"] == {expected: PARTICIPANTS}
    assert report["endpoints"]["POST /blobs"]["statuses"] == {"201": PARTICIPANTS}
    assert report["endpoints"]["POST /participants/register"]["statuses"] == {"201": PARTICIPANTS}


def test_every_accepted_submission_is_on_chain_exactly_once_and_nothing_is_lost(report: dict[str, Any]) -> None:
    chain = report["chain"]
    assert chain["lost"] == [] and chain["duplicated"] == [] and chain["unexpected"] == []
    assert chain["mismatched"] == [] and chain["bad_receipts"] == []
    assert chain["on_chain_participants"] == PARTICIPANTS and chain["result_entries"] == PARTICIPANTS
    if report["mode"] == "direct":
        assert (chain["round_submissions"], chain["batched_entries"]) == (PARTICIPANTS, 0)
    else:
        assert (chain["round_submissions"], chain["batched_entries"]) == (0, PARTICIPANTS)
        # a full batch triggers a post while submissions are still coming in (a post takes whatever is pending
        # then, at most BATCH_SIZE each); the close route posts the rest
        sizes = [b["entries"] for b in chain["batches"]]
        assert sum(sizes) == PARTICIPANTS and all(1 <= n <= BATCH_SIZE for n in sizes)
        assert sorted(b["index"] for b in chain["batches"]) == list(range(len(sizes)))
        assert report["close_flushed"] <= PARTICIPANTS - BATCH_SIZE
    assert chain["round_state"] == 3 and chain["exactly_once"]


def test_the_round_finalizes_and_the_auditor_verifies_it(report: dict[str, Any]) -> None:
    assert report["finalize"]["entries"] == PARTICIPANTS
    assert report["audit_verified"], report["audit_output"]
    assert healthy(report)


def test_the_report_has_latency_percentiles_and_throughput(report: dict[str, Any]) -> None:
    for name in ("POST /blobs", "POST /rounds/{id}/submissions"):
        e = report["endpoints"][name]
        assert 0 < e["p50_ms"] <= e["p95_ms"] <= e["p99_ms"] <= e["max_ms"]
    assert report["throughput"]["submissions_per_s"] > 0


def test_retries_are_bounded_and_only_for_a_connection_that_was_never_made() -> None:
    calls = Calls()
    with httpx.Client(base_url=f"http://127.0.0.1:{free_port()}", timeout=2) as http:  # nothing listens there
        assert call(http, calls, "GET /health", "GET", "/health") is None
    assert calls.retries["GET /health"] == 3
    assert [s for _, s, _ in calls.rows] == ["ConnectError"] * 4
