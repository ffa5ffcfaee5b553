"""ParticipantRegistry on the in-process EVM: self-registration, operator suspension and reinstatement, and who may
write reputation. Errors and events are compared with their exact arguments."""

from __future__ import annotations

import pytest
from eth_utils import keccak

from chain.gateways.participant_registry import (
    Participant,
    ParticipantRegistered,
    ParticipantReinstated,
    ParticipantSuspended,
    ReputationUpdated,
)

NONE, ACTIVE, SUSPENDED = 0, 1, 2
INITIAL_REPUTATION = 500_000
OPERATOR_ROLE = keccak(text="OPERATOR_ROLE")
WRITER_ROLE = keccak(text="REPUTATION_WRITER_ROLE")
REASON = b"byzantine".ljust(32, b"\0")


@pytest.fixture
def env(chain_env):
    """The deployment with participants[0] registered."""
    registry = chain_env.deployment.registry
    registry.register(sender=chain_env.participants[0], value=registry.min_stake())
    return chain_env


def open_round(env) -> int:
    """Publish a genesis model and open round 1 (a day long) so that commitments can be attempted."""
    rounds = env.deployment.rounds
    rounds.publish_genesis(keccak(text="genesis"), "cid-genesis", sender=env.operator)
    deadline = env.w3.eth.get_block("latest")["timestamp"] + 86_400
    (opened,) = rounds.round_opened_in(
        rounds.open_round(deadline, keccak(text="rule"), "cid-rule", 0, 800_000, sender=env.operator)
    )
    return opened.round_id


def commit(env, round_id: int, participant: str):
    rounds = env.deployment.rounds
    return rounds.commit_update(round_id, keccak(text=participant), f"cid-{participant}", sender=participant)


def test_self_registration_emits_event_and_records_an_active_participant(chain_env) -> None:
    registry, p = chain_env.deployment.registry, chain_env.participants[2]
    assert registry.status_of(p) == NONE and registry.participant_count() == 0

    result = registry.register(sender=p, value=registry.min_stake())

    assert registry.participant_registered_in(result) == [ParticipantRegistered(p, INITIAL_REPUTATION)]
    block_time = chain_env.w3.eth.get_block(result.block_number)["timestamp"]
    assert registry.participant_of(p) == Participant(ACTIVE, INITIAL_REPUTATION, block_time, 0)
    assert registry.is_active(p) is True and registry.reputation_of(p) == INITIAL_REPUTATION
    assert registry.participant_count() == 1
    events = registry.participant_registered_events(from_block=0)
    assert [(e.args, e.tx_hash) for e in events] == [(ParticipantRegistered(p, INITIAL_REPUTATION), result.tx_hash)]


def test_double_registration_reverts(env, reverts) -> None:
    p = env.participants[0]
    with reverts("RegistryAlreadyRegistered", account=p):
        env.deployment.registry.register(sender=p, value=env.deployment.registry.min_stake())
    assert env.deployment.registry.participant_count() == 1


def test_suspension_blocks_commits_until_the_operator_reinstates(env, reverts) -> None:
    registry, p = env.deployment.registry, env.participants[0]
    round_id = open_round(env)

    suspended = registry.suspend(p, REASON, sender=env.operator)
    assert registry.participant_suspended_in(suspended) == [ParticipantSuspended(p, env.operator, REASON)]
    assert (registry.status_of(p), registry.is_active(p)) == (SUSPENDED, False)
    with reverts("RoundsParticipantNotActive", participant=p, status=SUSPENDED):
        commit(env, round_id, p)

    reinstated = registry.reinstate(p, sender=env.operator)
    assert registry.participant_reinstated_in(reinstated) == [ParticipantReinstated(p, env.operator)]
    assert (registry.status_of(p), registry.is_active(p)) == (ACTIVE, True)
    assert env.deployment.rounds.update_committed_in(commit(env, round_id, p))[0].participant == p
    assert registry.reputation_of(p) == INITIAL_REPUTATION  # a suspension is not a reputation penalty


def test_only_the_operator_suspends_and_reinstates(env, reverts) -> None:
    registry, p = env.deployment.registry, env.participants[0]
    for sender in (env.admin, env.aggregator, env.outsider, p):
        with reverts("AccessControlUnauthorizedAccount", account=sender, neededRole=OPERATOR_ROLE):
            registry.suspend(p, REASON, sender=sender)
    assert registry.status_of(p) == ACTIVE
    registry.suspend(p, REASON, sender=env.operator)
    for sender in (env.admin, env.aggregator, env.outsider, p):  # p cannot lift its own suspension either
        with reverts("AccessControlUnauthorizedAccount", account=sender, neededRole=OPERATOR_ROLE):
            registry.reinstate(p, sender=sender)
    assert registry.status_of(p) == SUSPENDED


def test_suspend_and_reinstate_check_the_current_status(env, reverts) -> None:
    registry, p, stranger = env.deployment.registry, env.participants[0], env.participants[1]
    with reverts("RegistryNotRegistered", account=stranger):
        registry.suspend(stranger, REASON, sender=env.operator)
    with reverts("RegistryNotSuspended", account=p, status=ACTIVE):
        registry.reinstate(p, sender=env.operator)
    with reverts("RegistryNotSuspended", account=stranger, status=NONE):
        registry.reinstate(stranger, sender=env.operator)
    registry.suspend(p, REASON, sender=env.operator)
    with reverts("RegistryAlreadySuspended", account=p):
        registry.suspend(p, REASON, sender=env.operator)


def test_set_reputation_by_a_non_writer_is_unauthorized(env, reverts) -> None:
    registry, p = env.deployment.registry, env.participants[0]
    for sender in (env.admin, env.operator, env.aggregator, env.outsider, p):
        with reverts("AccessControlUnauthorizedAccount", account=sender, neededRole=WRITER_ROLE):
            registry.set_reputation(p, 1, 1_000_000, sender=sender)
    assert registry.reputation_of(p) == INITIAL_REPUTATION
    assert registry.reputation_writer_role() == WRITER_ROLE
    holders = [env.deployment.rounds.address, env.admin, env.operator, env.aggregator, env.outsider]
    assert [registry.has_role(WRITER_ROLE, a) for a in holders] == [True, False, False, False, False]


def test_a_writer_sets_reputation_within_bounds(env, reverts) -> None:
    registry, p, stranger = env.deployment.registry, env.participants[0], env.participants[1]
    registry.grant_role(WRITER_ROLE, env.admin, sender=env.admin)

    result = registry.set_reputation(p, 7, 1_000_000, sender=env.admin)
    assert registry.reputation_updated_in(result) == [ReputationUpdated(p, 7, INITIAL_REPUTATION, 1_000_000)]
    assert registry.reputation_of(p) == 1_000_000
    with reverts("RegistryReputationOutOfRange", account=p, reputation=1_000_001):
        registry.set_reputation(p, 8, 1_000_001, sender=env.admin)
    with reverts("RegistryNotRegistered", account=stranger):
        registry.set_reputation(stranger, 8, 1, sender=env.admin)


def test_reputation_writes_must_name_a_newer_round(env, reverts) -> None:
    registry, p = env.deployment.registry, env.participants[0]
    registry.grant_role(WRITER_ROLE, env.admin, sender=env.admin)
    assert registry.reputation_round_of(p) == 0
    registry.set_reputation(p, 5, 700_000, sender=env.admin)
    assert registry.reputation_round_of(p) == 5
    for stale in (5, 4, 1):  # a late claim of an older round cannot overwrite a newer reputation
        with reverts("RegistryStaleReputation", account=p, roundId=stale, latestRoundId=5):
            registry.set_reputation(p, stale, 100_000, sender=env.admin)
    assert registry.reputation_of(p) == 700_000
    registry.set_reputation(p, 6, 650_000, sender=env.admin)
    assert (registry.reputation_of(p), registry.reputation_round_of(p)) == (650_000, 6)
