from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import PlatformDep

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness and what the server is connected to")
def health(platform: PlatformDep) -> dict[str, Any]:
    return platform.health()
