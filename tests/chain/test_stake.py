"""Stake against sybils on the in-process EVM (ParticipantRegistry + FederatedRounds): every path to an Active
identity locks ``minStake``; slashable verdicts burn ``slashPpm`` of the current stake (legacy finalization, and
Merkle rounds by proof), exactly as trainer/incentives.py computes it; withdrawal waits ``withdrawalDelay`` after the
request and after the last committed round's finalization; withdraw is not re-enterable. Errors and events are
compared with their exact arguments, amounts in wei."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import solcx
from eth_account.messages import encode_typed_data
from eth_utils import function_abi_to_4byte_selector, keccak

from chain.compiler import COMPILER_SETTINGS, find_solc
from chain.eip712 import registration_typed_data
from chain.embedded import advance_time
from chain.gateways.participant_registry import (
    ParticipantRegistered,
    RoundSettlementStarted,
    Stake,
    StakeDeposited,
    StakeSlashed,
    StakeWithdrawn,
    WithdrawalRequested,
)
from chain.lists import ListHeader, ResultEntry, ResultList
from chain.transactor import TxResult
from fedledger.wiring import default_stake_params
from trainer.incentives import MIN_STAKE, SLASH_PPM, SLASHABLE, WITHDRAWAL_DELAY_S, slashable_mask, slashed
from trainer.rules import Status
from trainer.simulation import STAKE_UNIT

ETHER = 10**18
DAY = 86_400
BUDGET = 100 * 10**18
DECAY = 800_000
SLASHER_ROLE = keccak(text="SLASHER_ROLE")
# tests/conftest.py's ChainEnv; conftest is not importable under --import-mode=importlib.
Env = Any


# ------------------------------------------------------------------------------------------------------- helpers


def ref(label: str) -> tuple[bytes, str]:
    return keccak(text=label), f"cid-{label}"


def now(env: Env) -> int:
    return int(env.w3.eth.get_block("latest")["timestamp"])


def stake_of(env: Env, account: str) -> int:
    return env.deployment.registry.stake_of(account).amount


def register_all(env: Env, accounts: list[str]) -> None:
    for p in accounts:
        env.deployment.registry.register(sender=p, value=MIN_STAKE)


def open_round(env: Env) -> int:
    rounds = env.deployment.rounds
    if rounds.global_model().model_hash == bytes(32):
        rounds.publish_genesis(*ref("genesis"), sender=env.operator)
    result = rounds.open_round(now(env) + DAY, *ref("rule"), BUDGET, DECAY, sender=env.operator)
    return rounds.round_opened_in(result)[0].round_id


def commit(env: Env, round_id: int, participant: str) -> TxResult:
    return env.deployment.rounds.commit_update(round_id, *ref(f"update/{round_id}/{participant}"), sender=participant)


def finalize(env: Env, round_id: int, verdicts: dict[str, tuple[int, int]]) -> TxResult:
    """Close ``round_id`` and finalize it the legacy way with participant -> (status, score)."""
    rounds = env.deployment.rounds
    rounds.close_round(round_id, sender=env.operator)
    ps = sorted(verdicts, key=lambda a: int(a, 16))
    return rounds.finalize_round(round_id, *ref(f"model/{round_id}"), ps, [verdicts[p][1] for p in ps],
                                 [verdicts[p][0] for p in ps], sender=env.aggregator)


def merkle_finalize(env: Env, round_id: int, results: dict[str, tuple[int, int, int, int]]) -> ResultList:
    """Close ``round_id`` and commit its result list: participant -> (status, score, reward, reputation after)."""
    rounds = env.deployment.rounds
    rounds.close_round(round_id, sender=env.operator)
    header = ListHeader(env.w3.eth.chain_id, rounds.address, round_id)
    entries = [ResultEntry(p, *values) for p, values in results.items()]
    lst = ResultList.build(header, ref("rule")[0], ref(f"model/{round_id}")[0], entries)
    digest = hashlib.sha256(lst.canonical_bytes()).digest()
    rounds.finalize_round_with_results(round_id, *ref(f"model/{round_id}"), lst.root, digest, f"list-{digest.hex()}",
                                       len(lst.entries), lst.accepted, lst.total_reward, sender=env.aggregator)
    return lst


def slash_by_proof(env: Env, lst: ResultList, participant: str, *, sender: str, **forged: int) -> TxResult:
    e = lst.entry(participant)
    assert e is not None
    values = {"status": e.status, "score": e.score, "reward": e.reward, "reputation": e.reputation, **forged}
    return env.deployment.rounds.slash(lst.header.round_id, participant, values["status"], values["score"],
                                       values["reward"], values["reputation"], lst.proof(participant), sender=sender)


def paid_gas(env: Env, result: TxResult) -> int:
    return int(result.gas_used) * int(result.receipt["effectiveGasPrice"])


def balance(env: Env, account: str) -> int:
    return int(env.w3.eth.get_balance(account))


# ------------------------------------------------------------------------------------- parameters and the rule


def test_the_deployment_carries_the_python_stake_parameters(chain_env) -> None:
    registry, rounds = chain_env.deployment.registry, chain_env.deployment.rounds
    assert (registry.min_stake(), registry.slash_ppm(), registry.withdrawal_delay()) == (
        MIN_STAKE, SLASH_PPM, WITHDRAWAL_DELAY_S)
    assert chain_env.deployment.manifest.stake == {
        "minStake": MIN_STAKE, "slashPpm": SLASH_PPM, "withdrawalDelay": WITHDRAWAL_DELAY_S, "admissionRequired": 0}
    assert registry.admission_required() is False
    assert default_stake_params().to_manifest() == chain_env.deployment.manifest.stake
    assert STAKE_UNIT == MIN_STAKE  # the robustness bench prices attacks in the deployment's minimum stakes
    assert rounds.slashable_mask() == slashable_mask()
    assert [rounds.is_slashable(s) for s in range(16)] == [s in SLASHABLE for s in range(16)]
    assert not rounds.is_slashable(Status.UNAVAILABLE) and not rounds.is_slashable(Status.FREE_RIDE)
    assert registry.has_role(SLASHER_ROLE, rounds.address)


def test_a_slash_ppm_above_one_is_refused_at_deployment(chain_env, reverts) -> None:
    from chain.gateways.participant_registry import ParticipantRegistryGateway

    with reverts("RegistrySlashOutOfRange", slashPpm=1_000_001):
        ParticipantRegistryGateway.deploy(chain_env.transactor, chain_env.admin, MIN_STAKE, 1_000_001, DAY, False,
                                          sender=chain_env.admin)


# --------------------------------------------------------------------------------------------- registration


def test_registration_locks_the_stake_sent(chain_env) -> None:
    registry, p = chain_env.deployment.registry, chain_env.participants[0]
    before = balance(chain_env, p)
    result = registry.register(sender=p, value=MIN_STAKE + 5)
    assert registry.participant_registered_in(result) == [ParticipantRegistered(p, 500_000)]
    assert registry.stake_deposited_in(result) == [StakeDeposited(p, p, MIN_STAKE + 5, MIN_STAKE + 5)]
    assert registry.stake_of(p) == Stake(MIN_STAKE + 5, 0, 0, 0)
    assert (registry.total_staked(), registry.total_burned()) == (MIN_STAKE + 5, 0)
    assert balance(chain_env, registry.address) == MIN_STAKE + 5
    assert balance(chain_env, p) == before - MIN_STAKE - 5 - paid_gas(chain_env, result)
    assert registry.can_commit(p) is True


@pytest.mark.parametrize("value", [0, MIN_STAKE - 1])
def test_registration_with_too_little_stake_reverts_with_the_values(chain_env, reverts, value: int) -> None:
    registry, p = chain_env.deployment.registry, chain_env.participants[0]
    with reverts("RegistryStakeTooLow", account=p, stake=value, minStake=MIN_STAKE):
        registry.register(sender=p, value=value)
    assert (registry.status_of(p), registry.participant_count(), registry.total_staked()) == (0, 0, 0)


def test_double_registration_reverts_and_keeps_the_first_stake(chain_env, reverts) -> None:
    registry, p = chain_env.deployment.registry, chain_env.participants[0]
    registry.register(sender=p, value=MIN_STAKE)
    with reverts("RegistryAlreadyRegistered", account=p):
        registry.register(sender=p, value=MIN_STAKE)
    assert (stake_of(chain_env, p), balance(chain_env, registry.address)) == (MIN_STAKE, MIN_STAKE)


def test_a_relayer_pays_the_stake_of_a_signed_registration(chain_env, reverts) -> None:
    registry, p, sponsor = chain_env.deployment.registry, chain_env.participants[1], chain_env.operator
    deadline = now(chain_env) + 3600
    typed = registration_typed_data(chain_env.w3.eth.chain_id, registry.address, p, deadline)
    sig = bytes(chain_env.transactor.account(p).sign_message(encode_typed_data(full_message=typed)).signature)
    with reverts("RegistryStakeTooLow", account=p, stake=MIN_STAKE // 2, minStake=MIN_STAKE):
        registry.register_for(p, deadline, sig, sender=sponsor, value=MIN_STAKE // 2)
    p_before = balance(chain_env, p)

    result = registry.register_for(p, deadline, sig, sender=sponsor, value=MIN_STAKE)

    assert registry.stake_deposited_in(result) == [StakeDeposited(p, sponsor, MIN_STAKE, MIN_STAKE)]
    assert (stake_of(chain_env, p), balance(chain_env, p)) == (MIN_STAKE, p_before)  # credited to p, paid by sponsor


def test_anyone_tops_up_a_registered_identity(chain_env, reverts) -> None:
    registry, p, stranger = chain_env.deployment.registry, chain_env.participants[0], chain_env.participants[1]
    registry.register(sender=p, value=MIN_STAKE)
    result = registry.deposit_stake(p, sender=chain_env.outsider, value=3)
    assert registry.stake_deposited_in(result) == [StakeDeposited(p, chain_env.outsider, 3, MIN_STAKE + 3)]
    with reverts("RegistryZeroDeposit", account=p):
        registry.deposit_stake(p, sender=chain_env.outsider, value=0)
    with reverts("RegistryNotRegistered", account=stranger):
        registry.deposit_stake(stranger, sender=chain_env.outsider, value=MIN_STAKE)
    assert registry.total_staked() == MIN_STAKE + 3


# --------------------------------------------------------------------------------------- legacy slashing


def test_finalize_round_slashes_each_slashable_verdict_by_the_rule(chain_env) -> None:
    env, registry = chain_env, chain_env.deployment.registry
    ps = env.participants
    register_all(env, ps)
    registry.deposit_stake(ps[3], sender=ps[3], value=7 * 10**17 + 3)  # a stake that does not divide evenly
    round_id = open_round(env)
    for p in ps:
        commit(env, round_id, p)
    verdicts = {ps[0]: (Status.ACCEPTED, 700_000), ps[1]: (Status.LOW_SCORE, -800_000),
                ps[2]: (Status.UNAVAILABLE, 0), ps[3]: (Status.NON_FINITE, 0)}
    stakes = {p: stake_of(env, p) for p in ps}

    result = finalize(env, round_id, verdicts)

    expected = [StakeSlashed(p, round_id, int(s), stakes[p], slashed(stakes[p], s))
                for p, (s, _) in sorted(verdicts.items(), key=lambda kv: int(kv[0], 16)) if s in SLASHABLE]
    assert registry.stake_slashed_in(result) == expected
    assert [e.amount for e in expected] == [10**17, (17 * 10**17 + 3) // 10]  # 10 % of 1 ETH, of 1.7 ETH + 3 wei
    assert {p: stake_of(env, p) for p in ps} == {p: stakes[p] - slashed(stakes[p], verdicts[p][0]) for p in ps}
    assert registry.total_burned() == sum(e.amount for e in expected)
    assert registry.total_staked() == sum(stakes.values()) - registry.total_burned()
    assert balance(env, registry.address) == sum(stakes.values())  # burned ether stays locked in the registry
    assert registry.stake_of(ps[1]).slashed == 10**17
    assert [registry.is_slashed(p, round_id) for p in ps] == [False, True, False, True]
    assert registry.round_settlement_started_in(result) == [RoundSettlementStarted(round_id, now(env))]


def test_a_slashed_identity_cannot_commit_until_topped_up(chain_env, reverts) -> None:
    env, registry = chain_env, chain_env.deployment.registry
    p, honest = env.participants[0], env.participants[1]
    register_all(env, [p, honest])
    r1 = open_round(env)
    commit(env, r1, p)
    commit(env, r1, honest)
    finalize(env, r1, {p: (Status.LOW_SCORE, -500_000), honest: (Status.ACCEPTED, 900_000)})
    assert stake_of(env, p) == MIN_STAKE - MIN_STAKE // 10 and registry.can_commit(p) is False
    r2 = open_round(env)
    with reverts("RegistryStakeTooLow", account=p, stake=MIN_STAKE - MIN_STAKE // 10, minStake=MIN_STAKE):
        commit(env, r2, p)
    registry.deposit_stake(p, sender=env.outsider, value=MIN_STAKE // 10)
    assert registry.can_commit(p) is True
    assert env.deployment.rounds.update_committed_in(commit(env, r2, p))[0].participant == p


def test_only_the_rounds_contract_slashes_and_locks(chain_env, reverts) -> None:
    env, registry, p = chain_env, chain_env.deployment.registry, chain_env.participants[0]
    register_all(env, [p])
    for sender in (env.admin, env.operator, env.aggregator, env.outsider, p):
        with reverts("AccessControlUnauthorizedAccount", account=sender, neededRole=SLASHER_ROLE):
            registry.slash(p, 1, Status.LOW_SCORE, sender=sender)
        with reverts("AccessControlUnauthorizedAccount", account=sender, neededRole=SLASHER_ROLE):
            registry.lock_for_round(p, 1, sender=sender)
        with reverts("AccessControlUnauthorizedAccount", account=sender, neededRole=SLASHER_ROLE):
            registry.mark_round_finalized(1, sender=sender)
        with reverts("AccessControlUnauthorizedAccount", account=sender, neededRole=SLASHER_ROLE):
            registry.mark_round_opened(1, sender=sender)
    assert registry.stake_of(p) == Stake(MIN_STAKE, 0, 0, 0) and registry.finalized_at(1) == 0


def test_a_slasher_slashes_once_per_round_and_identity(chain_env, reverts) -> None:
    env, registry, p = chain_env, chain_env.deployment.registry, chain_env.participants[0]
    register_all(env, [p])
    registry.grant_role(SLASHER_ROLE, env.admin, sender=env.admin)
    registry.slash(p, 300, Status.LOW_SCORE, sender=env.admin)  # round 300: word 1 of the bitmap
    with reverts("RegistryAlreadySlashed", account=p, roundId=300):
        registry.slash(p, 300, Status.BAD_FORMAT, sender=env.admin)
    registry.slash(p, 44, Status.LOW_SCORE, sender=env.admin)  # 300 % 256 == 44: another word, another flag
    assert stake_of(env, p) == MIN_STAKE - MIN_STAKE // 10 - (MIN_STAKE - MIN_STAKE // 10) // 10
    with reverts("RegistryNotRegistered", account=env.outsider):
        registry.slash(env.outsider, 1, Status.LOW_SCORE, sender=env.admin)


# --------------------------------------------------------------------------------------- Merkle slashing


@pytest.fixture
def merkle1(chain_env) -> tuple[Env, ResultList]:
    """Round 1 with ps[0] accepted, ps[1] LOW_SCORE, ps[2] UNAVAILABLE (all committed directly), Merkle-finalized."""
    env, ps = chain_env, chain_env.participants
    register_all(env, ps[:3])
    round_id = open_round(env)
    for p in ps[:3]:
        commit(env, round_id, p)
    lst = merkle_finalize(env, round_id, {ps[0]: (Status.ACCEPTED, 800_000, BUDGET, 560_000),
                                          ps[1]: (Status.LOW_SCORE, -900_000, 0, 400_000),
                                          ps[2]: (Status.UNAVAILABLE, 0, 0, 400_000)})
    return env, lst


def test_anyone_slashes_a_merkle_verdict_by_proof_once(merkle1, reverts) -> None:
    env, lst = merkle1
    registry, p = env.deployment.registry, env.participants[1]

    result = slash_by_proof(env, lst, p, sender=env.outsider)

    assert registry.stake_slashed_in(result) == [
        StakeSlashed(p, 1, Status.LOW_SCORE, MIN_STAKE, slashed(MIN_STAKE, Status.LOW_SCORE))]
    assert stake_of(env, p) == MIN_STAKE - 10**17 and registry.total_burned() == 10**17
    with reverts("RegistryAlreadySlashed", account=p, roundId=1):  # replayed by anyone
        slash_by_proof(env, lst, p, sender=env.participants[0])
    assert stake_of(env, p) == MIN_STAKE - 10**17


def test_a_forged_or_unslashable_merkle_leaf_slashes_nothing(merkle1, reverts) -> None:
    env, lst = merkle1
    rounds, ps = env.deployment.rounds, env.participants
    forged = {"status": Status.LOW_SCORE, "score": -900_000, "reward": 0, "reputation": 400_000}  # ps[0]'s real leaf is
    leaf = rounds.result_leaf(1, ps[0], *forged.values())                                         # ACCEPTED
    with reverts("RoundsInvalidProof", roundId=1, participant=ps[0], leaf=leaf):
        slash_by_proof(env, lst, ps[0], sender=env.outsider, **forged)
    with reverts("RoundsInvalidProof", roundId=1, participant=ps[3], leaf=rounds.result_leaf(1, ps[3], 1, -900_000,
                                                                                             0, 400_000)):
        rounds.slash(1, ps[3], 1, -900_000, 0, 400_000, lst.proof(ps[1]), sender=env.outsider)  # ps[1]'s proof
    with reverts("RoundsNotSlashable", roundId=1, participant=ps[0], status=Status.ACCEPTED):
        slash_by_proof(env, lst, ps[0], sender=env.outsider)
    with reverts("RoundsNotSlashable", roundId=1, participant=ps[2], status=Status.UNAVAILABLE):
        slash_by_proof(env, lst, ps[2], sender=env.outsider)
    assert [stake_of(env, p) for p in ps[:3]] == [MIN_STAKE] * 3
    assert env.deployment.registry.total_burned() == 0


def test_slash_by_proof_needs_a_merkle_finalized_round(chain_env, reverts) -> None:
    env = chain_env
    register_all(env, env.participants[:1])
    round_id = open_round(env)
    with reverts("RoundsResultsNotCommitted", roundId=round_id, state=1):
        env.deployment.rounds.slash(round_id, env.participants[0], 1, 0, 0, 0, [], sender=env.outsider)
    with reverts("RoundsUnknownRound", roundId=9, roundCount=1):
        env.deployment.rounds.slash(9, env.participants[0], 1, 0, 0, 0, [], sender=env.outsider)


# -------------------------------------------------------------------------------------------------- withdrawal


def test_withdrawal_waits_for_the_delay_and_pays_the_whole_stake_once(chain_env, reverts) -> None:
    env, registry, p = chain_env, chain_env.deployment.registry, chain_env.participants[0]
    register_all(env, [p])
    requested = registry.request_withdrawal(sender=p)
    t0 = now(env)
    assert registry.withdrawal_requested_in(requested) == [WithdrawalRequested(p, MIN_STAKE, t0)]
    assert registry.withdrawal_unlock_time(p) == t0 + WITHDRAWAL_DELAY_S and registry.can_commit(p) is False
    with reverts("RegistryWithdrawalPending", account=p, requestedAt=t0):
        registry.request_withdrawal(sender=p)
    with reverts("RegistryWithdrawalPending", account=p, requestedAt=t0):
        registry.deposit_stake(p, sender=p, value=1)
    with reverts("RegistryWithdrawalLocked", account=p, unlockTime=t0 + WITHDRAWAL_DELAY_S, timestamp=t0 + 1):
        registry.withdraw(sender=p)
    advance_time(env.w3, WITHDRAWAL_DELAY_S - 10)
    with reverts("RegistryWithdrawalLocked", account=p, unlockTime=t0 + WITHDRAWAL_DELAY_S,
                 timestamp=t0 + WITHDRAWAL_DELAY_S - 9):
        registry.withdraw(sender=p)
    advance_time(env.w3, 10)
    before = balance(env, p)

    result = registry.withdraw(sender=p)

    assert registry.stake_withdrawn_in(result) == [StakeWithdrawn(p, MIN_STAKE)]
    assert balance(env, p) == before + MIN_STAKE - paid_gas(env, result)
    assert registry.stake_of(p) == Stake(0, 0, 0, 0)
    assert (registry.total_staked(), balance(env, registry.address)) == (0, 0)
    with reverts("RegistryWithdrawalNotRequested", account=p):  # withdraw twice
        registry.withdraw(sender=p)
    with reverts("RegistryNothingToWithdraw", account=p):  # nothing left to announce
        registry.request_withdrawal(sender=p)
    assert registry.status_of(p) == 1 and registry.can_commit(p) is False  # registered, but stakes again to commit


def test_withdraw_needs_a_request_and_a_registration(chain_env, reverts) -> None:
    env, registry, p = chain_env, chain_env.deployment.registry, chain_env.participants[0]
    with reverts("RegistryNotRegistered", account=p):
        registry.request_withdrawal(sender=p)
    with reverts("RegistryWithdrawalNotRequested", account=p):
        registry.withdraw(sender=p)
    register_all(env, [p])
    with reverts("RegistryWithdrawalNotRequested", account=p):
        registry.withdraw(sender=p)


def test_a_withdrawing_identity_cannot_commit(chain_env, reverts) -> None:
    env, registry, p = chain_env, chain_env.deployment.registry, chain_env.participants[0]
    register_all(env, [p])
    round_id = open_round(env)
    registry.request_withdrawal(sender=p)
    with reverts("RegistryWithdrawalPending", account=p, requestedAt=now(env)):
        commit(env, round_id, p)
    assert env.deployment.rounds.get_round(round_id).submissions == 0


def test_a_committed_round_keeps_the_stake_in_until_it_is_slashed(chain_env, reverts) -> None:
    """The legacy path: a poisoner that asks to leave mid-round still pays the round's slash."""
    env, registry, p = chain_env, chain_env.deployment.registry, chain_env.participants[0]
    register_all(env, [p])
    round_id = open_round(env)
    commit(env, round_id, p)
    registry.request_withdrawal(sender=p)
    advance_time(env.w3, WITHDRAWAL_DELAY_S + 1)  # the request's delay has passed, the round is not final
    with reverts("RegistryRoundNotSettled", account=p, roundId=round_id):
        registry.withdraw(sender=p)
    assert registry.withdrawal_unlock_time(p) == 0
    finalize(env, round_id, {p: (Status.NORM_OUTLIER, 100_000)})
    final_at = registry.finalized_at(round_id)
    with reverts("RegistryWithdrawalLocked", account=p, unlockTime=final_at + WITHDRAWAL_DELAY_S,
                 timestamp=now(env) + 1):
        registry.withdraw(sender=p)
    advance_time(env.w3, WITHDRAWAL_DELAY_S)
    result = registry.withdraw(sender=p)
    assert registry.stake_withdrawn_in(result) == [StakeWithdrawn(p, MIN_STAKE - MIN_STAKE // 10)]
    assert (registry.total_burned(), balance(env, registry.address)) == (MIN_STAKE // 10, MIN_STAKE // 10)


def test_a_request_during_an_open_round_waits_for_that_round_batched_or_not(chain_env, reverts) -> None:
    """A relayer's batch is never checked on chain, so the registry cannot know who is in it: a withdrawal asked
    while a round is open waits for that round's finalization plus the delay, committed directly or not."""
    env, registry, ps = chain_env, chain_env.deployment.registry, chain_env.participants
    register_all(env, ps[:2])
    round_id = open_round(env)
    commit(env, round_id, ps[0])
    registry.request_withdrawal(sender=ps[1])  # never committed directly (it may be in a batch)
    assert registry.stake_of(ps[1]).last_commit_round == round_id
    advance_time(env.w3, WITHDRAWAL_DELAY_S + 1)
    with reverts("RegistryRoundNotSettled", account=ps[1], roundId=round_id):
        registry.withdraw(sender=ps[1])
    finalize(env, round_id, {ps[0]: (Status.ACCEPTED, 900_000)})
    final_at = registry.finalized_at(round_id)
    with reverts("RegistryWithdrawalLocked", account=ps[1], unlockTime=final_at + WITHDRAWAL_DELAY_S,
                 timestamp=now(env) + 1):
        registry.withdraw(sender=ps[1])
    advance_time(env.w3, WITHDRAWAL_DELAY_S)
    assert registry.stake_withdrawn_in(registry.withdraw(sender=ps[1])) == [StakeWithdrawn(ps[1], MIN_STAKE)]
    registry.register(sender=env.participants[2], value=MIN_STAKE)  # no round open now: no wait beyond the delay
    registry.request_withdrawal(sender=env.participants[2])
    assert registry.stake_of(env.participants[2]).last_commit_round == 0


def test_a_merkle_round_leaves_the_delay_for_slash_proofs(chain_env, reverts) -> None:
    """Merkle path: a poisoner asks to leave mid-round; its withdrawal unlocks withdrawalDelay after the round's
    finalization, so the permissionless slash by proof lands first."""
    env, registry, ps = chain_env, chain_env.deployment.registry, chain_env.participants
    register_all(env, ps[:2])
    round_id = open_round(env)
    commit(env, round_id, ps[0])
    commit(env, round_id, ps[1])
    registry.request_withdrawal(sender=ps[1])
    advance_time(env.w3, 3600)
    lst = merkle_finalize(env, round_id, {ps[0]: (Status.ACCEPTED, 800_000, BUDGET, 560_000),
                                          ps[1]: (Status.BAD_FORMAT, 0, 0, 400_000)})
    final_at = registry.finalized_at(round_id)
    assert final_at == now(env) and registry.withdrawal_unlock_time(ps[1]) == final_at + WITHDRAWAL_DELAY_S
    with reverts("RegistryWithdrawalLocked", account=ps[1], unlockTime=final_at + WITHDRAWAL_DELAY_S,
                 timestamp=now(env) + 1):
        registry.withdraw(sender=ps[1])
    slash_by_proof(env, lst, ps[1], sender=env.outsider)
    advance_time(env.w3, WITHDRAWAL_DELAY_S)
    assert registry.stake_withdrawn_in(registry.withdraw(sender=ps[1])) == [StakeWithdrawn(ps[1], MIN_STAKE - 10**17)]


# ------------------------------------------------------------------------------------------------- reentrancy

ATTACKER = """
// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

interface IRegistry {
    function register() external payable;
    function requestWithdrawal() external;
    function withdraw() external;
}

/// Registers itself, then re-enters withdraw() from the ether transfer withdraw() makes to it.
contract WithdrawReentrant {
    IRegistry public immutable registry;
    bytes public reentryError;
    uint256 public received;
    uint256 public reentries;

    constructor(IRegistry r) { registry = r; }
    function join() external payable { registry.register{value: msg.value}(); }
    function leave() external { registry.requestWithdrawal(); }
    function cashOut() external { registry.withdraw(); }

    receive() external payable {
        received += msg.value;
        reentries += 1;
        try registry.withdraw() {} catch (bytes memory reason) { reentryError = reason; }
    }
}
"""


def test_withdraw_cannot_be_reentered(chain_env) -> None:
    env, registry = chain_env, chain_env.deployment.registry
    out = solcx.compile_standard(
        {"language": "Solidity", "sources": {"WithdrawReentrant.sol": {"content": ATTACKER}},
         "settings": COMPILER_SETTINGS}, solc_binary=find_solc())
    compiled = out["contracts"]["WithdrawReentrant.sol"]["WithdrawReentrant"]
    factory = env.w3.eth.contract(abi=compiled["abi"], bytecode="0x" + compiled["evm"]["bytecode"]["object"])
    tx = env.transactor
    deployed = tx.send(factory.constructor(registry.address), env.outsider, "WithdrawReentrant")
    attacker = env.w3.eth.contract(address=deployed.receipt["contractAddress"], abi=compiled["abi"])
    register_all(env, env.participants[:2])  # others' stakes the attacker would drain
    tx.send(attacker.functions.join(), env.outsider, "WithdrawReentrant", value=MIN_STAKE)
    tx.send(attacker.functions.leave(), env.outsider, "WithdrawReentrant")
    advance_time(env.w3, WITHDRAWAL_DELAY_S)

    tx.send(attacker.functions.cashOut(), env.outsider, "WithdrawReentrant")

    reentrancy_error = next(i for i in registry.contract.abi if i.get("name") == "ReentrancyGuardReentrantCall")
    assert bytes(attacker.functions.reentryError().call()) == function_abi_to_4byte_selector(reentrancy_error)
    assert (attacker.functions.received().call(), attacker.functions.reentries().call()) == (MIN_STAKE, 1)
    assert balance(env, registry.address) == 2 * MIN_STAKE == registry.total_staked()
    assert registry.stake_of(attacker.address) == Stake(0, 0, 0, 0)


# ---------------------------------------------------------------------------------------------------- sybils


def test_k_sybil_identities_lock_k_stakes_and_each_pays_its_slash(chain_env) -> None:
    """One attacker behind k = 3 identities: 3 stakes locked, 3 slashes when its poisoned updates are rejected,
    nothing earned; the one honest identity earns the whole budget and loses nothing."""
    env, registry, token = chain_env, chain_env.deployment.registry, chain_env.deployment.token
    honest, *sybils = env.participants
    k = len(sybils)
    assert k == 3
    register_all(env, sybils)
    assert (registry.total_staked(), balance(env, registry.address)) == (k * MIN_STAKE, k * MIN_STAKE)
    register_all(env, [honest])
    round_id = open_round(env)
    for p in env.participants:
        commit(env, round_id, p)

    finalize(env, round_id, {honest: (Status.ACCEPTED, 900_000), **{s: (Status.LOW_SCORE, -950_000) for s in sybils}})

    lost = {p: MIN_STAKE - stake_of(env, p) for p in env.participants}
    earned = {p: token.balance_of(p) for p in env.participants}
    assert lost == {honest: 0, **{s: slashed(MIN_STAKE, Status.LOW_SCORE) for s in sybils}}
    assert sum(lost[s] for s in sybils) == k * MIN_STAKE // 10  # k identities: k slashes
    assert earned == {honest: BUDGET, **{s: 0 for s in sybils}}
    assert all(not registry.can_commit(s) for s in sybils) and registry.can_commit(honest)
