from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from fedledger.service import Platform
from fedledger.stack import embedded_stack

OPERATOR = {"Authorization": "Bearer test-operator-token"}


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    return Platform.create(embedded_stack(tmp_path, seed=5), tmp_path / "index.sqlite", max_upload_bytes=200_000)


@pytest.fixture
def client(platform: Platform, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(operator_token="test-operator-token", state_dir=tmp_path)  # type: ignore[arg-type]
    with TestClient(create_app(settings, platform)) as c:
        yield c
