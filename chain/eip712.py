"""The EIP-712 messages our contracts check: one builder, used by signers (participants), relayers and auditors.

The domain binds the chain id and the verifying contract; the struct binds the round (commitments) or the account
and a deadline (registrations), so a signature cannot be replayed on another chain, contract or round.
"""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys.constants import SECPK1_N
from eth_utils import to_checksum_address

EIP712_DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
COMMITMENT_FIELDS = [
    {"name": "roundId", "type": "uint256"},
    {"name": "contentHash", "type": "bytes32"},
    {"name": "cid", "type": "string"},
]
REGISTRATION_FIELDS = [{"name": "account", "type": "address"}, {"name": "deadline", "type": "uint256"}]


def typed_message(
    domain: str, chain_id: int, contract: str, primary: str, fields: list[dict[str, str]], message: dict[str, Any]
) -> dict[str, Any]:
    """An EIP-712 message for one of our contracts (domain version "1", chain id and address bound)."""
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_FIELDS, primary: fields},
        "primaryType": primary,
        "domain": {"name": domain, "version": "1", "chainId": chain_id, "verifyingContract": contract},
        "message": message,
    }


def commitment_typed_data(chain_id: int, verifying_contract: str, round_id: int, chash: bytes, cid: str) -> dict[str, Any]:
    """The message a participant signs to commit an update (FederatedRounds.COMMITMENT_TYPEHASH)."""
    message = {"roundId": round_id, "contentHash": chash, "cid": cid}
    return typed_message("FedLedger", chain_id, verifying_contract, "Commitment", COMMITMENT_FIELDS, message)


def registration_typed_data(chain_id: int, registry: str, account: str, deadline: int) -> dict[str, Any]:
    """The message a participant signs to be registered by a relayer (ParticipantRegistry.registerFor)."""
    message = {"account": account, "deadline": deadline}
    return typed_message("FedLedger Registry", chain_id, registry, "Registration", REGISTRATION_FIELDS, message)


def signature_problem(signature: bytes) -> str | None:
    """What OpenZeppelin's ``ECDSA.tryRecover`` refuses before recovering: not 65 bytes, v not 27/28, or s in the
    upper half of the curve order (a malleable copy of a valid signature). None for a well-formed signature."""
    if len(signature) != 65:
        return f"a signature is 65 bytes, got {len(signature)}"
    if int.from_bytes(signature[32:64], "big") > SECPK1_N // 2:
        return "signature has a high s value (malleable); sign again with a standard library"
    if signature[64] not in (27, 28):
        return f"signature v must be 27 or 28, got {signature[64]}"
    return None


def recover_signer(typed: dict[str, Any], signature: bytes) -> str | None:
    """The checksummed address that signed ``typed``, or None when the signature is malformed (as
    ``ECDSA.tryRecover`` answers an error rather than an address)."""
    if signature_problem(signature) is not None:
        return None
    try:
        return to_checksum_address(Account.recover_message(encode_typed_data(full_message=typed), signature=signature))
    except Exception:  # eth-keys raises several types for malformed bytes: all mean "no signer"
        return None
