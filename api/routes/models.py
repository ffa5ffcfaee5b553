from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import PlatformDep

router = APIRouter(prefix="/models", tags=["models"])


@router.get("/current", summary="The current global model's hash and CID (fetch it from /blobs/{cid})")
def current(platform: PlatformDep) -> dict[str, Any]:
    return platform.current_model()


@router.get("/lineage", summary="Every global model and the model it was trained from")
def lineage(platform: PlatformDep) -> list[dict[str, Any]]:
    return platform.lineage()
