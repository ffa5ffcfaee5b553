from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from hexbytes import HexBytes
from pydantic import BaseModel, Field

from api.deps import Address, PlatformDep, Signature

router = APIRouter(prefix="/participants", tags=["participants"])

EXAMPLE_ADDRESS = "0x8eEe9593B002b53bb57817c891293d522399A2B9"


class RegisterRequest(BaseModel):
    address: Address = Field(examples=[EXAMPLE_ADDRESS])
    deadline: int = Field(ge=0, lt=2**64, description="the deadline from the challenge", examples=[1767225600])
    signature: Signature = Field(description="EIP-712 signature of the challenge's typed data", examples=["0x" + "ab" * 65])


@router.get("/challenge", summary="EIP-712 registration challenge to sign with the participant's own key")
def challenge(address: Address, platform: PlatformDep) -> dict[str, Any]:
    return platform.registration_challenge(address=address)


@router.post("/register", status_code=201, summary="Register a wallet by its signed challenge (relayed on-chain)")
def register(body: RegisterRequest, platform: PlatformDep) -> dict[str, Any]:
    return platform.register(address=body.address, deadline=body.deadline, signature=bytes(HexBytes(body.signature)))


@router.get("/{address}", summary="A participant's status, reputation, balance and per-round history")
def participant(address: Address, platform: PlatformDep) -> dict[str, Any]:
    return platform.participant(address=address)
