from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path
from hexbytes import HexBytes
from pydantic import BaseModel, Field

from api.deps import Address, Hex32, PlatformDep, Signature

router = APIRouter(prefix="/rounds", tags=["rounds"])

RoundId = Path(ge=1, lt=2**63, description="round number, from 1", examples=[1])


class SubmissionRequest(BaseModel):
    participant: Address = Field(examples=["0x8eEe9593B002b53bb57817c891293d522399A2B9"])
    content_hash: Hex32 = Field(description="sha256 of the uploaded bytes (POST /blobs)", examples=["0x" + "00" * 32])
    cid: str = Field(min_length=1, max_length=200, description="the CID (or store URI) POST /blobs returned",
                     examples=["bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"])
    signature: Signature = Field(description="EIP-712 Commitment(roundId, contentHash, cid) signed by participant",
                                 examples=["0x" + "ab" * 65])


@router.get("", summary="Every round, from the event index")
def rounds(platform: PlatformDep) -> list[dict[str, Any]]:
    return platform.rounds()


@router.get("/{round_id}", summary="One round: models, rule, submissions and verdicts")
def round_(platform: PlatformDep, round_id: int = RoundId) -> dict[str, Any]:
    return platform.round(round_id=round_id)


@router.post("/{round_id}/submissions", status_code=201, summary="Relay a participant's signed commitment")
def submit(body: SubmissionRequest, platform: PlatformDep, round_id: int = RoundId) -> dict[str, Any]:
    return platform.submit(
        round_id=round_id,
        participant=body.participant,
        content_hash=bytes(HexBytes(body.content_hash)),
        cid=body.cid,
        signature=bytes(HexBytes(body.signature)),
    )
