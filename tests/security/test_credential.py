"""The operator credential on a real server: refused when missing or wrong, never written to the logs, never
shown by the settings; no CORS grant to other origins; the upload limit enforced before the body is stored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from api.settings import Settings

SECRET = "op-secret-7f3a9c1e5b2d4086"


def test_the_credential_is_checked_and_never_logged(api_server: Callable, tmp_path: Path) -> None:
    server = api_server({"FEDLEDGER_STACK": "embedded", "FEDLEDGER_STATE_DIR": str(tmp_path / "state"),
                         "FEDLEDGER_OPERATOR_TOKEN": SECRET, "FEDLEDGER_MAX_UPLOAD_BYTES": "1000"})
    server.token = SECRET
    with httpx.Client(base_url=server.url, timeout=60) as http:
        missing = http.post("/operator/genesis", json={"dataset": "digits"})
        wrong = http.post("/operator/genesis", json={"dataset": "digits"},
                          headers={"Authorization": f"Bearer {SECRET[:-1]}x"})
        prefix = http.post("/operator/genesis", json={"dataset": "digits"},
                           headers={"Authorization": f"Bearer {SECRET[:8]}"})
        for r in (missing, wrong, prefix):
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert r.json()["error"] == "Unauthorized" and SECRET not in r.text
        assert http.post("/operator/genesis", json={"dataset": "digits"}, headers=server.operator).status_code == 201
        assert http.post("/operator/genesis", json={"dataset": "digits"}, headers=server.operator).status_code == 409

        preflight = http.options("/operator/genesis", headers={"Origin": "https://evil.example",
                                                               "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers  # no CORS: other origins cannot read answers
        assert "access-control-allow-origin" not in http.get("/health", headers={"Origin": "https://evil.example"}).headers

        too_big = http.post("/blobs", content=b"\0" * 1001, headers={"content-type": "application/octet-stream"})
        assert too_big.status_code == 413 and "1000" in too_big.json()["detail"]
    server.stop()
    log = server.log.read_text()
    assert "POST /operator/genesis" in log  # the access log was written...
    assert SECRET not in log and SECRET[:8] not in log  # ...without the credential


def test_settings_never_show_the_token() -> None:
    settings = Settings(operator_token=SECRET)  # type: ignore[arg-type]
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    assert settings.operator_token.get_secret_value() == SECRET
