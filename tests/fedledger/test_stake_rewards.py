"""Rule version 6 on the embedded stack: a Merkle-settled round splits its budget by score times the stake each
identity had when the round opened; the auditor recomputes that split from the registry's past state and catches a
list paid by score alone; legacy settlement, which pays by score on-chain, refuses the rule."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings

from chain.deploy import Deployment
from chain.lists import ResultList
from fedledger.audit import Auditor
from fedledger.demo import Consortium, DemoConfig
from fedledger.history import ChainHistory
from fedledger.roles import Aggregator, MerkleAggregator, PreparedResults
from fedledger.service import Platform
from fedledger.settlement import stakes_at_open
from fedledger.stack import embedded_stack
from tests.fedledger.test_merkle_audit import rewind
from trainer.errors import RuleError
from trainer.incentives import reward_split, stake_weights, weight
from trainer.local import LocalConfig
from trainer.rules import RuleConfig, Status

UNIT = 10**18


@dataclass
class Round:
    consortium: Consortium
    round_id: int
    stakes_at_open: dict[str, int]  # what each identity had staked when the round opened

    @property
    def deployment(self) -> Deployment:
        return self.consortium.deployment

    def aggregator(self) -> MerkleAggregator:
        c = self.consortium
        return MerkleAggregator(c.deployment, c.store, c.stack.aggregator)


def commit_staked_round(tmp: Path, rule: RuleConfig) -> tuple[Round, int]:
    """Five honest participants; participant 1 stakes 3 units before round 1 opens (under ``rule``), participant 2
    tops up 5 units only after it opened; every update committed, the round closed, nothing settled yet."""
    cfg = DemoConfig(participants=5, byzantine=0, rounds=1, seed=6, clean_reference=False)
    stack = embedded_stack(tmp, seed=cfg.seed)
    c = Consortium(cfg, stack)
    c.local = LocalConfig(epochs=1)
    c.enroll()
    c.clients[1].deposit_stake(2 * UNIT)
    round_id, _ = c.operator.open_round(rule)
    registry = c.deployment.registry
    at_open = {cl.address: registry.stake_of(cl.address).amount for cl in c.clients}
    c.clients[2].deposit_stake(5 * UNIT)
    updates = c.round_updates([cl.fetch_global_model() for cl in c.clients], round_id)
    for cl, u in zip(c.clients, updates, strict=True):
        cl.submit(round_id, u)
    c.operator.close_round(round_id)
    tester = stack.transactor.w3.provider.ethereum_tester
    return Round(c, round_id, at_open), tester.take_snapshot()


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Round, int]]:
    yield commit_staked_round(tmp_path_factory.mktemp("stake-rewards"), RuleConfig.version6())


@pytest.fixture
def rnd(committed: tuple[Round, int]) -> Round:
    r, snapshot = committed
    rewind(r.deployment, snapshot)
    return r


def test_a_v6_round_pays_score_times_stake_at_the_open_and_the_audit_recomputes_it(rnd: Round) -> None:
    c = rnd.consortium
    p0, p1, p2 = (cl.address for cl in c.clients[:3])
    assert rnd.stakes_at_open[p1] == 3 * UNIT and rnd.stakes_at_open[p0] == rnd.stakes_at_open[p2] == UNIT
    assert c.deployment.registry.stake_of(p2).amount == 6 * UNIT  # the top-up after the open counts next round

    history = ChainHistory(c.deployment)
    record = history.round(rnd.round_id)
    participants = sorted(rnd.stakes_at_open, key=str.lower)
    assert stakes_at_open(history, record, participants) == [rnd.stakes_at_open[p] for p in participants]

    prepared = rnd.aggregator().prepare(rnd.round_id)
    rnd.aggregator().commit(prepared)
    entries = prepared.results.entries
    assert [e.participant for e in entries] == participants
    assert all(e.status == Status.ACCEPTED for e in entries)
    weights = [weight(e.status, e.score) for e in entries]
    expected = reward_split(RuleConfig.reward_budget, stake_weights(weights, [rnd.stakes_at_open[p] for p in participants]))
    assert [e.reward for e in entries] == expected
    listed = {e.participant: e for e in entries}
    # per unit of stake and of score, everyone earns the same: participant 1's 3 units earn 3 times
    per_unit = {p: listed[p].reward / (listed[p].score * rnd.stakes_at_open[p] // UNIT) for p in participants}
    assert max(per_unit.values()) / min(per_unit.values()) < 1 + 1e-12
    by_score = reward_split(RuleConfig.reward_budget, weights)
    assert listed[p1].reward > by_score[participants.index(p1)]
    assert listed[p2].reward < by_score[participants.index(p2)]  # its later top-up did not count

    report = Auditor(c.deployment, c.store).verify()
    assert report.verified, report.failure_lines()
    (audit,) = report.rounds
    rewards = next(ch for ch in audit.checks if ch.name == "rewards")
    assert rewards.detail == f"{sum(expected)} claimable by score x stake at block {record.opened_block}"


def test_a_v6_list_paid_by_score_alone_fails_the_rewards_check_naming_who_is_misspaid(rnd: Round) -> None:
    c = rnd.consortium
    p1 = c.clients[1].address

    def by_score(prepared: PreparedResults) -> PreparedResults:
        results = prepared.results
        rewards = reward_split(RuleConfig.reward_budget, [weight(e.status, e.score) for e in results.entries])
        entries = [dataclasses.replace(e, reward=r) for e, r in zip(results.entries, rewards, strict=True)]
        return dataclasses.replace(prepared, results=ResultList.build(results.header, results.rule_hash,
                                                                      results.new_model_hash, entries))

    agg = rnd.aggregator()
    agg.commit(by_score(agg.prepare(rnd.round_id)))
    report = Auditor(c.deployment, c.store).verify()
    assert not report.verified
    failed = {ch.name: ch.detail for r in report.rounds for ch in r.failures()}
    assert set(failed) == {"rewards"}, failed
    assert f"{p1}: listed reward" in failed["rewards"] and "rule gives" in failed["rewards"]


def test_legacy_settlement_refuses_a_v6_round_and_the_chain_is_unchanged(rnd: Round) -> None:
    c = rnd.consortium
    legacy = Aggregator(c.deployment, c.store, c.stack.aggregator)
    with pytest.raises(RuleError, match="splits rewards by stake; finalizeRound pays by score alone"):
        legacy.finalize(rnd.round_id)
    assert ChainHistory(c.deployment).round(rnd.round_id).state == "closed"


@pytest.mark.parametrize("version", [6, 7, 8])
@pytest.mark.parametrize("settlement", ["legacy", "merkle"])
def test_the_api_opens_stake_rule_rounds_only_where_rounds_settle_by_merkle_root(settlement: str, version: int,
                                                                               tmp_path: Path) -> None:
    platform = Platform.create(embedded_stack(tmp_path, seed=5), tmp_path / "index.sqlite", settlement=settlement)
    settings = Settings(operator_token="t", state_dir=tmp_path, settlement=settlement)  # type: ignore[arg-type]
    operator = {"Authorization": "Bearer t"}
    with TestClient(create_app(settings, platform)) as c:
        assert c.post("/operator/genesis", json={"dataset": "digits"}, headers=operator).status_code == 201
        unknown = c.post("/operator/rounds", json={"duration_s": 600, "rule_version": 9}, headers=operator)
        assert unknown.status_code == 422
        opened = c.post("/operator/rounds", json={"duration_s": 600, "rule_version": version}, headers=operator)
        if settlement == "merkle":
            assert opened.status_code == 201, opened.text
            view = c.get(f"/rounds/{opened.json()['round']}")
            assert view.status_code == 200 and view.json()["rule"]["version"] == version
        else:
            assert opened.status_code == 400
            assert opened.json()["error"] == "RuleError"
            assert f"rule version {version} splits rewards by stake" in opened.json()["detail"]
            assert "only Merkle settlement pays; this service settles legacy" in opened.json()["detail"]
            assert c.post("/operator/rounds", json={"duration_s": 600}, headers=operator).status_code == 201


def test_stakes_replayed_from_the_registrys_events_equal_its_past_state_at_every_block(tmp_path: Path) -> None:
    """Registrations, a deposit, slashes of sign-flippers by Merkle proof, their top-ups, a withdrawal request and the
    withdrawal: at every block the stakes folded from the events are what ``stakeOf`` read at that block says."""
    from chain.embedded import advance_time
    from fedledger.demo import play_round
    from fedledger.settlement import stakes_at_block
    from trainer.incentives import WITHDRAWAL_DELAY_S

    cfg = DemoConfig(participants=4, byzantine=2, rounds=2, seed=7, clean_reference=False, settlement="merkle",
                     rule_version=7)
    c = Consortium(cfg, embedded_stack(tmp_path, seed=cfg.seed))
    c.local = LocalConfig(steps=2)
    c.enroll()
    c.clients[3].deposit_stake(2 * UNIT)
    for _ in range(2):
        play_round(c)
    c.clients[3].request_withdrawal()
    advance_time(c.stack.transactor.w3, WITHDRAWAL_DELAY_S + 1)
    c.clients[3].withdraw()
    d, wallets = c.deployment, [cl.address for cl in c.clients]
    history = ChainHistory(d)
    names = {e.name for e in history.events("StakeSlashed")} | {e.name for e in history.events("StakeWithdrawn")}
    assert names == {"StakeSlashed", "StakeWithdrawn"}  # the run exercised every kind of change
    head = c.stack.transactor.w3.eth.block_number
    seen = set()
    first = min(e.block_number for e in history.events("StakeDeposited"))  # the registry exists by then
    assert stakes_at_block(history, first - 1, wallets) == [0] * 4
    for block in range(first, head + 1):
        replayed = stakes_at_block(history, block, wallets)
        assert replayed == [d.registry.stake_of(w, block=block).amount for w in wallets], block
        seen.add(tuple(replayed))
    assert replayed[3] == 0 and len(seen) > 6  # withdrawn at the end; the stakes changed many times on the way
