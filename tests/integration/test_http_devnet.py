"""A full register -> submit -> finalize -> audit flow over HTTP against the devnet stack: a real uvicorn
serving the API on loopback, the participant and auditor command lines, Hardhat and Kubo underneath.

The module runs its own devnet: the round's verdicts depend on the global model, and on the shared devnet that model
is whatever the integration tests before this one (Flower among them) left, which differs from run to run. From its
own genesis the round is the same every run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fedledger.cli import main
from fedledger.devnet import Devnet, _terminate, free_port
from fedledger.roles_cli import verify_report_signature

TOKEN = "integration-operator-token"


@pytest.fixture
def devnet(own_devnet: Devnet) -> Devnet:
    return own_devnet


@pytest.fixture
def api_url(devnet: Devnet, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "FEDLEDGER_STACK": "devnet", "FEDLEDGER_DEVNET_DIR": str(devnet.cfg.dir),
           "FEDLEDGER_OPERATOR_TOKEN": TOKEN, "FEDLEDGER_ENVIRONMENT": "production", "FEDLEDGER_LOCAL_STEPS": "epochs:3"}
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "fedledger.cli", "api", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            pytest.fail(f"API did not start: {(tmp_path / 'api.log').read_text()[-2000:]}")
        yield url
    finally:
        _terminate(proc.pid)
        log.close()


def test_participants_register_submit_and_an_auditor_verifies_over_http(
    api_url: str, devnet: Devnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEDLEDGER_KEYSTORE_PASSWORD", "correct horse battery staple")
    operator = {"Authorization": f"Bearer {TOKEN}"}
    http = httpx.Client(base_url=api_url, timeout=60)
    assert http.get("/models/current").status_code == 404
    assert http.post("/operator/genesis", json={"dataset": "digits"}, headers=operator).status_code == 201
    keys = [tmp_path / f"p{i}.json" for i in range(3)]
    for k in keys:
        assert main(["participant", "new-key", "--keystore", str(k)]) == 0
        assert main(["participant", "register", "--keystore", str(k), "--api", api_url]) == 0
    assert http.post("/operator/rounds", json={"duration_s": 900}, headers={"Authorization": "Bearer nope"}).status_code == 401
    opened = http.post("/operator/rounds", json={"duration_s": 900}, headers=operator)
    assert opened.status_code == 201, opened.text
    round_id = opened.json()["round"]
    model = tmp_path / "global.safetensors"
    assert main(["participant", "fetch-model", "--api", api_url, "--out", str(model)]) == 0
    assert http.get("/health").json()["local_training"]["local_steps"] == "epochs:3"
    capsys.readouterr()
    for i, k in enumerate(keys):
        update = tmp_path / f"u{i}.safetensors"
        # participant 0 follows the training the operator announces, the others train the default 2 epochs
        follow = ["--api", api_url] if i == 0 else []
        assert main(["participant", "train", "--model", str(model), "--part", str(i), "--of", "10",
                     "--out", str(update), *follow]) == 0
        trained = capsys.readouterr().out
        assert ("3 SGD steps: 2 epochs, at most 3 steps" in trained) == (i == 0), trained
        assert main(["participant", "submit", "--keystore", str(k), "--api", api_url, "--update", str(update),
                     "--round", str(round_id)]) == 0
    assert http.post(f"/operator/rounds/{round_id}/close", headers=operator).status_code == 200
    fin = http.post(f"/operator/rounds/{round_id}/finalize", headers=operator)
    assert fin.status_code == 200, fin.text
    assert len(fin.json()["accepted"]) == 3, fin.json()["verdicts"]

    capsys.readouterr()
    assert main(["participant", "status", "--keystore", str(keys[0]), "--api", api_url]) == 0
    assert "ACCEPTED" in capsys.readouterr().out
    audited = http.get(f"/audit/rounds/{round_id}").json()
    assert audited["verified"] is True

    manifest = devnet.cfg.manifest_path
    auditor_key = tmp_path / "auditor.json"
    assert main(["participant", "new-key", "--keystore", str(auditor_key)]) == 0
    report = tmp_path / "report.json"
    assert main(["audit", "report", "--manifest", str(manifest), "--out", str(report),
                 "--keystore", str(auditor_key)]) == 0
    content = json.loads(report.read_text())
    assert content["report"]["summary"]["verified"] is True
    assert verify_report_signature(report) == content["signer"]
    content["report"]["summary"]["verified"] = False
    report.write_text(json.dumps(content))
    with pytest.raises(ValueError, match="does not match its sha256"):
        verify_report_signature(report)
    assert main(["audit", "rounds", "--manifest", str(manifest)]) == 0
    assert main(["audit", "round", str(round_id), "--manifest", str(manifest)]) == 0
