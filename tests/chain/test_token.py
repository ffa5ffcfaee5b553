"""FedToken on the in-process EVM: only MINTER_ROLE mints, and only the round manager holds it after deployment."""

from __future__ import annotations

from eth_utils import keccak

from chain.gateways.fed_token import Transfer

MINTER_ROLE = keccak(text="MINTER_ROLE")
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


def test_mint_by_a_non_minter_is_unauthorized(chain_env, reverts) -> None:
    token, p = chain_env.deployment.token, chain_env.participants[0]
    # The admin administers the role but does not hold it: it cannot mint either.
    for sender in (chain_env.admin, chain_env.operator, chain_env.aggregator, chain_env.outsider, p):
        with reverts("AccessControlUnauthorizedAccount", account=sender, neededRole=MINTER_ROLE):
            token.mint(p, 10**18, sender=sender)
    assert (token.total_supply(), token.balance_of(p)) == (0, 0)
    assert token.minter_role() == MINTER_ROLE
    holders = [chain_env.deployment.rounds.address, chain_env.admin, chain_env.operator, chain_env.aggregator]
    assert [token.has_role(MINTER_ROLE, a) for a in holders] == [True, False, False, False]


def test_a_granted_minter_mints_until_revoked(chain_env, reverts) -> None:
    token, admin, p = chain_env.deployment.token, chain_env.admin, chain_env.participants[0]
    assert (token.name(), token.symbol(), token.decimals()) == ("FedLedger Reward", "FED", 18)
    token.grant_role(MINTER_ROLE, chain_env.operator, sender=admin)

    result = token.mint(p, 5, sender=chain_env.operator)

    assert token.transfer_in(result) == [Transfer(ZERO_ADDRESS, p, 5)]
    assert (token.total_supply(), token.balance_of(p)) == (5, 5)
    token.revoke_role(MINTER_ROLE, chain_env.operator, sender=admin)
    with reverts("AccessControlUnauthorizedAccount", account=chain_env.operator, neededRole=MINTER_ROLE):
        token.mint(p, 5, sender=chain_env.operator)
    assert token.total_supply() == 5
