from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Response
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


@router.get("/{round_id}", summary="One round: models, rule, submissions and verdicts; batches, results root, claims")
def round_(platform: PlatformDep, round_id: int = RoundId) -> dict[str, Any]:
    return platform.round(round_id=round_id)


@router.post(
    "/{round_id}/submissions",
    status_code=201,
    summary="Relay a participant's signed commitment",
    description="Direct relay (FEDLEDGER_RELAY_MODE=direct): sent on chain now, 201 with the transaction. Batched "
                "relay: checked like the contract would, queued durably, 202 with the receipt (status pending, or "
                "included if this submission triggered a flush); follow it at GET /rounds/{id}/receipts/{address}. "
                "A differentially private update (its blob declares a DP mechanism in its safetensors header) is "
                "relayed through the PrivacyLedger, never batched: its epsilon is computed from the mechanism "
                "with Opacus's RDP accountant and recorded with the commitment in one transaction (201, with "
                "the privacy spent); 409 PrivacyBudgetExceeded with the numbers when over the budget.",
    responses={202: {"description": "queued with the batching relay: the receipt"}},
)
def submit(body: SubmissionRequest, platform: PlatformDep, response: Response, round_id: int = RoundId) -> dict[str, Any]:
    result = platform.submit(
        round_id=round_id,
        participant=body.participant,
        content_hash=bytes(HexBytes(body.content_hash)),
        cid=body.cid,
        signature=bytes(HexBytes(body.signature)),
    )
    if platform.batched:
        response.status_code = 202
    return result


@router.get(
    "/{round_id}/receipts/{address}",
    summary="Where a participant's commitment stands: direct, included in a batch (with proof), pending or expired",
    description="For an included commitment: batch index and root, the signed list's hash and CID, the Merkle "
                "proof and the contract's own isInBatch answer (on_chain_verified). A participant left out can "
                "still commit by its own transaction while can_commit_directly is true.",
)
def receipt(address: Address, platform: PlatformDep, round_id: int = RoundId) -> dict[str, Any]:
    return platform.receipt(round_id=round_id, address=address)
