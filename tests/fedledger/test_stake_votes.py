"""Rule version 7 on the embedded stack: the Merkle aggregator's reference median counts the stake each identity had
when the round opened as its votes, the auditor recomputes the round from the registry's past state, and a result
list scored with one vote per identity (version 6's median) fails the audit's score check."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from fedledger.audit import Auditor
from fedledger.history import ChainHistory
from fedledger.roles import fetch_params, gather_submissions
from fedledger.settlement import derive_results, header_of
from tests.fedledger.test_merkle_audit import rewind
from tests.fedledger.test_stake_rewards import UNIT, Round, commit_staked_round
from trainer.aggregation import RoundOutcome, evaluate_round
from trainer.rules import RuleConfig
from trainer.serialization import serialize


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Round, int]]:
    yield commit_staked_round(tmp_path_factory.mktemp("stake-votes"), RuleConfig.version7())


@pytest.fixture
def rnd(committed: tuple[Round, int]) -> Round:
    r, snapshot = committed
    rewind(r.deployment, snapshot)
    return r


def recompute(rnd: Round, rule: RuleConfig, stakes: dict[str, int] | None) -> RoundOutcome:
    c = rnd.consortium
    record = ChainHistory(c.deployment).round(rnd.round_id)
    base = fetch_params(c.store, record.base_model_cid, record.base_model_hash)
    return evaluate_round(base, gather_submissions(c.store, record), rule, stakes=stakes)


def test_a_v7_round_is_judged_against_the_median_weighted_by_stake_at_the_open_and_audits(rnd: Round) -> None:
    c = rnd.consortium
    p2 = c.clients[2].address
    now = {cl.address: c.deployment.registry.stake_of(cl.address).amount for cl in c.clients}
    assert rnd.stakes_at_open[c.clients[1].address] == 3 * UNIT and now[p2] == 6 * UNIT != rnd.stakes_at_open[p2]

    prepared = rnd.aggregator().prepare(rnd.round_id)
    at_open = recompute(rnd, RuleConfig.version7(), rnd.stakes_at_open)
    one_vote_each = recompute(rnd, RuleConfig.version6(), None)
    after_top_up = recompute(rnd, RuleConfig.version7(), now)
    scores = [v.score for v in prepared.outcome.verdicts]
    assert scores == [v.score for v in at_open.verdicts]
    assert scores != [v.score for v in one_vote_each.verdicts]
    assert scores != [v.score for v in after_top_up.verdicts]  # the deposit after the open votes from next round
    assert prepared.new_ref.content_hash == c.store.put(serialize(at_open.new_params)).content_hash

    rnd.aggregator().commit(prepared)
    report = Auditor(c.deployment, c.store).verify()
    assert report.verified, report.failure_lines()


def test_a_v7_list_scored_with_one_vote_per_identity_fails_the_score_check(rnd: Round) -> None:
    c = rnd.consortium
    agg = rnd.aggregator()
    prepared = agg.prepare(rnd.round_id)
    wrong = recompute(rnd, RuleConfig.version6(), None)
    history = ChainHistory(c.deployment)
    record = history.round(rnd.round_id)
    results = derive_results(header_of(history, rnd.round_id), record.rule_hash, prepared.new_ref.content_hash, wrong,
                             {}, budget=record.reward_budget, decay_ppm=record.reputation_decay,
                             stakes=[rnd.stakes_at_open[v.participant] for v in wrong.verdicts])
    agg.commit(dataclasses.replace(prepared, results=results))
    report = Auditor(c.deployment, c.store).verify()
    assert not report.verified
    failed = {ch.name: ch.detail for r in report.rounds for ch in r.failures()}
    assert "scores" in failed, failed
    assert "rewards" not in failed  # the rewards follow the listed scores: only the scores are wrong
