"""The local training an operator announces over GET /health (FEDLEDGER_LOCAL_STEPS)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from fedledger.service import Platform


def test_health_announces_the_operators_local_training(platform: Platform, tmp_path: Path) -> None:
    """FEDLEDGER_LOCAL_STEPS is what `fedledger participant train --api` follows; a bad value fails at start-up."""
    settings = Settings(operator_token="t", state_dir=tmp_path, local_steps="epochs:6")  # type: ignore[arg-type]
    with TestClient(create_app(settings, platform)) as c:
        assert c.get("/health").json()["local_training"] == {
            "local_steps": "epochs:6", "description": "2 epochs, at most 6 steps of batch 32, SGD lr 0.05 momentum 0.9"}
    assert Settings(local_steps="8").local_steps == "8"
    with pytest.raises(ValueError, match="local steps must be at least 1, got 0"):
        Settings(local_steps="epochs:0")
