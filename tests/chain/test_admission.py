"""A consortium's registry (ParticipantRegistry deployed with ``admissionRequired``): only wallets an operator admitted
may register, by their own transaction or by a relayed signature; nothing is locked or registered on a refusal.
Errors and events are compared with their exact arguments."""

from __future__ import annotations

from typing import Any

from eth_account.messages import encode_typed_data
from eth_utils import keccak

from chain.eip712 import registration_typed_data
from chain.gateways.participant_registry import ParticipantAdmitted, ParticipantRegistered
from fedledger.wiring import default_stake_params
from trainer.incentives import MIN_STAKE

OPERATOR_ROLE = keccak(text="OPERATOR_ROLE")
Env = Any  # tests/conftest.py's ChainEnv


def signed_registration(env: Env, account: str, deadline: int) -> bytes:
    typed = registration_typed_data(env.w3.eth.chain_id, env.deployment.registry.address, account, deadline)
    return bytes(env.transactor.account(account).sign_message(encode_typed_data(full_message=typed)).signature)


def test_the_manifest_and_the_contract_say_admission_is_required(chain_env_factory) -> None:
    env = chain_env_factory(admission=True)
    assert env.deployment.registry.admission_required() is True
    assert env.deployment.manifest.stake == {**default_stake_params().to_manifest(), "admissionRequired": 1}


def test_an_unadmitted_wallet_cannot_register_and_loses_nothing(chain_env_factory, reverts) -> None:
    env = chain_env_factory(admission=True)
    registry, p = env.deployment.registry, env.participants[0]
    assert registry.is_admitted(p) is False
    with reverts("RegistryNotAdmitted", account=p):
        registry.register(sender=p, value=MIN_STAKE)
    deadline = int(env.w3.eth.get_block("latest")["timestamp"]) + 600
    with reverts("RegistryNotAdmitted", account=p):  # a sponsor relaying its signature is refused too
        registry.register_for(p, deadline, signed_registration(env, p, deadline), sender=env.operator, value=MIN_STAKE)
    assert registry.status_of(p) == 0
    assert (registry.total_staked(), int(env.w3.eth.get_balance(registry.address))) == (0, 0)
    assert registry.participant_count() == 0


def test_the_operator_admits_once_then_the_wallet_registers_by_either_path(chain_env_factory, reverts) -> None:
    env = chain_env_factory(admission=True)
    registry = env.deployment.registry
    own, relayed = env.participants[0], env.participants[1]
    for p in (own, relayed):
        result = registry.admit(p, sender=env.operator)
        assert registry.participant_admitted_in(result) == [ParticipantAdmitted(p, env.operator)]
        assert registry.is_admitted(p) is True
    with reverts("RegistryAlreadyAdmitted", account=own):
        registry.admit(own, sender=env.operator)
    result = registry.register(sender=own, value=MIN_STAKE)
    assert registry.participant_registered_in(result) == [ParticipantRegistered(own, 500_000)]
    deadline = int(env.w3.eth.get_block("latest")["timestamp"]) + 600
    registry.register_for(relayed, deadline, signed_registration(env, relayed, deadline), sender=env.operator,
                          value=MIN_STAKE)
    assert [registry.status_of(p) for p in (own, relayed)] == [1, 1]
    assert registry.total_staked() == 2 * MIN_STAKE
    # a member's second wallet (a sybil) is not admitted, whatever stake it brings
    with reverts("RegistryNotAdmitted", account=env.participants[2]):
        registry.register(sender=env.participants[2], value=5 * MIN_STAKE)


def test_only_an_operator_admits(chain_env_factory, reverts) -> None:
    env = chain_env_factory(admission=True)
    registry, p = env.deployment.registry, env.participants[0]
    for who in (p, env.outsider, env.aggregator):
        with reverts("AccessControlUnauthorizedAccount", account=who, neededRole=OPERATOR_ROLE):
            registry.admit(p, sender=who)
    assert registry.is_admitted(p) is False


def test_an_open_registry_admits_everyone_and_refuses_admissions(chain_env, reverts) -> None:
    registry, p = chain_env.deployment.registry, chain_env.participants[0]
    assert registry.admission_required() is False
    assert registry.is_admitted(p) is True
    with reverts("RegistryAdmissionNotRequired", account=p):
        registry.admit(p, sender=chain_env.operator)
    registry.register(sender=p, value=MIN_STAKE)
    assert registry.status_of(p) == 1
