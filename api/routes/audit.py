from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path

from api.deps import PlatformDep

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("/rounds", summary="Re-derive every finalized round from the chain and the blob store")
def audit_all(platform: PlatformDep) -> dict[str, Any]:
    return platform.audit().to_json()


@router.get("/rounds/{round_id}", summary="Re-derive one round: per-check results")
def audit_round(platform: PlatformDep, round_id: int = Path(ge=1, lt=2**63, examples=[1])) -> dict[str, Any]:
    return platform.audit(round_id=round_id).to_json()
