from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from hexbytes import HexBytes
from pydantic import BaseModel, Field

from api.deps import Address, PlatformDep, Signature

router = APIRouter(prefix="/participants", tags=["participants"])

EXAMPLE_ADDRESS = "0x8eEe9593B002b53bb57817c891293d522399A2B9"
RoundNumber = Annotated[int, Field(ge=1, lt=2**63)]


class RegisterRequest(BaseModel):
    address: Address = Field(examples=[EXAMPLE_ADDRESS])
    deadline: int = Field(ge=0, lt=2**64, description="the deadline from the challenge", examples=[1767225600])
    signature: Signature = Field(description="EIP-712 signature of the challenge's typed data", examples=["0x" + "ab" * 65])


class ClaimRequest(BaseModel):
    rounds: list[RoundNumber] | None = Field(
        default=None, min_length=1, max_length=256, examples=[[1, 2]],
        description="which Merkle-finalized rounds to claim; omit for every unclaimed one")


@router.get("/challenge", summary="EIP-712 registration challenge to sign with the participant's own key")
def challenge(address: Address, platform: PlatformDep) -> dict[str, Any]:
    return platform.registration_challenge(address=address)


@router.post("/register", status_code=201, summary="Register a wallet by its signed challenge (relayed on-chain)")
def register(body: RegisterRequest, platform: PlatformDep) -> dict[str, Any]:
    return platform.register(address=body.address, deadline=body.deadline, signature=bytes(HexBytes(body.signature)))


@router.get("/{address}", summary="A participant's status, reputation, balance and per-round history")
def participant(address: Address, platform: PlatformDep) -> dict[str, Any]:
    return platform.participant(address=address)


@router.get("/{address}/privacy", summary="A participant's privacy ledger: per-round epsilon and delta, totals, budget",
            description="From the PrivacyLedger contract: each round's (epsilon, delta) committed with the update "
                        "(epsilon in 1e-6 units, delta in 1e-18 units, also given as floats), the running totals "
                        "by basic composition (sums, what the contract enforces), the operator's budget in force "
                        "and what remains (null: no budget). An address without records has an empty ledger.")
def privacy(address: Address, platform: PlatformDep) -> dict[str, Any]:
    return platform.privacy(address=address)


@router.get("/{address}/claims", summary="Unclaimed results of Merkle-finalized rounds, with proofs, ready to send",
            description="The arguments of FederatedRounds.claim(participant, claims): anyone may send them; the "
                        "tokens always go to the participant.")
def claims(address: Address, platform: PlatformDep) -> dict[str, Any]:
    return platform.claims(address=address)


@router.post("/{address}/claims", summary="Claim a participant's rewards by proof (sent from the operator's account)",
             description="Minted to the participant, whoever asks. 404 if there is nothing to claim; 409 if a named "
                         "round was already claimed or has no results root.")
def claim(address: Address, platform: PlatformDep,
          body: Annotated[ClaimRequest | None, Body()] = None) -> dict[str, Any]:
    return platform.claim(address=address, round_ids=body.rounds if body else None)
