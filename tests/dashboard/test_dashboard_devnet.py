"""The dashboard on the devnet stack: `fedledger api` (FEDLEDGER_STACK=devnet) in its own process over a real
Hardhat node and Kubo daemon, after a demo round there; the round page in chromium agrees with the JSON and its blob
links serve the committed bytes from Kubo."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from fedledger.demo import DemoConfig, run_demo
from fedledger.devnet import Devnet, _terminate, free_port


@pytest.fixture
def devnet_api(own_devnet: Devnet, tmp_path: Path) -> Iterator[httpx.Client]:
    devnet = own_devnet
    result = run_demo(DemoConfig(participants=4, byzantine=1, rounds=1, clean_reference=False, stack="devnet",
                                 devnet=devnet.cfg, state_dir=tmp_path), Console(file=io.StringIO()))
    assert result.audit.verified
    port = free_port()
    env = {**os.environ, "FEDLEDGER_STACK": "devnet", "FEDLEDGER_DEVNET_DIR": str(devnet.cfg.dir)}
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "fedledger.cli", "api", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if http.get("/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"fedledger api did not answer: {(tmp_path / 'api.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield http
    finally:
        http.close()
        _terminate(proc.pid)
        log.close()


def test_round_page_on_the_devnet_matches_the_json_and_links_blobs_in_kubo(devnet_api, browser_for) -> None:
    http = devnet_api
    last = http.get("/rounds").json()[-1]["round"]
    view = http.get(f"/rounds/{last}").json()
    browser = browser_for(str(http.base_url).rstrip("/"))
    browser.open("/dashboard")
    page = browser.page
    assert page.inner_text("#stack").strip() == "devnet"
    assert int(page.inner_text("#chain-id")) == http.get("/health").json()["chain_id"]
    assert browser.open(f"/dashboard/rounds/{last}").status == 200
    assert page.inner_text("#audit-verdict").strip() == "verified"
    shown = page.eval_on_selector_all(
        "#committers-table tbody tr",
        "(rows) => rows.map((tr) => [tr.dataset.participant, tr.querySelector('.status').innerText.trim(),"
        " tr.querySelector('.score').innerText.trim(), tr.querySelector('.blob a').getAttribute('href')])")
    assert [(p, st, sc) for p, st, sc, _ in shown] == [
        (s["participant"], s["status"], f"{s['score']:.6f}") for s in view["submissions"]]
    assert len(shown) == 4
    blob = http.get(shown[0][3])
    assert blob.status_code == 200
    assert "0x" + hashlib.sha256(blob.content).hexdigest() == view["submissions"][0]["content_hash"]
    assert view["submissions"][0]["cid"].startswith("baf")  # a Kubo CID, not the embedded store's URI
    assert page.inner_text("#round-accuracy").strip()  # the demo's evaluation, kept beside the devnet index
    assert browser.foreign_requests() == []
