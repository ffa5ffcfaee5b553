from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api.deps import PlatformDep
from trainer.local import LocalConfig, parse_local_steps

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness and what the server is connected to")
def health(platform: PlatformDep, request: Request) -> dict[str, Any]:
    announced = request.app.state.settings.local_steps
    return {**platform.health(), "local_training": {
        "local_steps": announced, "description": LocalConfig.from_option(parse_local_steps(announced)).describe(),
    }}
