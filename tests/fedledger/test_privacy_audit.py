"""Differential privacy end to end on the embedded stack (real in-process EVM, real blob store): honest participants
train with Opacus DP-SGD, commit each round's (epsilon, delta) on the PrivacyLedger with their update, and the
auditor recomputes every epsilon from the mechanism the committed blob declares. Tampering is named by participant
and round; the operator's budget refuses updates with a typed error."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from fedledger.audit import Auditor, verify_command
from fedledger.history import ChainHistory
from fedledger.demo import Consortium, DemoConfig, play_round
from fedledger.privacy import PrivacyBudgetExceeded, ledger_of
from fedledger.stack import embedded_stack
from trainer.privacy import epsilon_of

DP = DemoConfig(participants=4, byzantine=0, rounds=2, seed=3, clean_reference=False, dp_epsilon=4.0)


def quiet() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=250), buf


def world_of(tmp_path: Path, cfg: DemoConfig = DP) -> Consortium:
    world = Consortium(cfg, embedded_stack(tmp_path, seed=cfg.seed))
    world.enroll()
    return world


def train_round(world: Consortium, round_id: int):
    """Every participant's update for ``round_id`` and its mechanism (all honest, all DP)."""
    bases = [c.fetch_global_model() for c in world.clients]
    updates = world.round_updates(bases, round_id)
    return updates, [world.mechanisms[(round_id, i)] for i in range(len(world.clients))]


def finish(world: Consortium, round_id: int) -> None:
    world.operator.close_round(round_id)
    world.aggregator.finalize(round_id)


def test_dp_rounds_audit_with_the_privacy_ledger_recomputed(tmp_path: Path) -> None:
    world = world_of(tmp_path)
    for _ in range(2):
        play_round(world)
    report = Auditor(world.deployment, world.store).verify()
    assert report.verified, report.failure_lines()
    assert all(any(c.name == "privacy" and c.ok for c in r.checks) for r in report.rounds)
    assert sorted(report.privacy) == sorted(c.address for c in world.clients)
    for i, client in enumerate(world.clients):
        led = report.privacy[client.address]
        mechs = [world.mechanisms[(r, i)] for r in (1, 2)]
        assert [e["round"] for e in led["rounds"]] == [1, 2]
        assert [e["recomputed_epsilon"] for e in led["rounds"]] == [epsilon_of(m) for m in mechs]
        assert all(3.99 <= e["epsilon"] <= 4.0 for e in led["rounds"])  # the per-round target, never above
        assert led["epsilon_basic"] == pytest.approx(sum(m.epsilon_micro for m in mechs) / 1e6)
        assert led["epsilon_rdp"] < led["epsilon_basic"]  # RDP composition is tighter than the on-chain sums
        chain = ledger_of(ChainHistory(world.deployment), client.address)
        assert [e.round_id for e in chain.entries] == [1, 2]
        assert chain.spent_micro == sum(m.epsilon_micro for m in mechs)
        assert chain.entries[-1].total_epsilon_micro == chain.spent_micro
        assert chain.remaining_micro is None  # no budget set


def test_an_epsilon_that_understates_the_mechanism_fails_the_audit_naming_participant_and_round(tmp_path) -> None:
    world = world_of(tmp_path)
    play_round(world)
    rid, _ = world.operator.open_round(world.rule)
    updates, mechs = train_round(world, rid)
    liar = world.clients[1]
    for i, (client, update, mech) in enumerate(zip(world.clients, updates, mechs, strict=True)):
        if client is liar:  # the blob declares the real mechanism; the record claims a quarter of its epsilon
            ref = client.upload_private(update, mech)
            world.deployment.privacy.commit_update_with_privacy(
                rid, ref.content_hash, ref.uri, mech.epsilon_micro // 4, mech.delta_atto, client.sign(rid, ref),
                sender=client.address)
        else:
            client.submit_private(rid, update, mech)
    finish(world, rid)
    console, out = quiet()
    assert verify_command(Auditor(world.deployment, world.store), console) == 1
    text = out.getvalue()
    assert f"round {rid}: privacy: {liar.address} (round {rid}): recorded epsilon" in text
    assert "understates its mechanism's" in text
    report = Auditor(world.deployment, world.store).verify()
    (failure,) = report.failure_lines()  # nothing else fails: only the understated record
    assert failure.startswith(f"round {rid}: privacy: {liar.address} (round {rid})")


def test_a_dp_blob_committed_around_the_ledger_fails_the_audit(tmp_path: Path) -> None:
    world = world_of(tmp_path)
    rid, _ = world.operator.open_round(world.rule)
    updates, mechs = train_round(world, rid)
    dodger = world.clients[2]
    for client, update, mech in zip(world.clients, updates, mechs, strict=True):
        if client is dodger:  # a DP blob, committed directly: no spend recorded
            client.commit(rid, client.upload_private(update, mech))
        else:
            client.submit_private(rid, update, mech)
    finish(world, rid)
    report = Auditor(world.deployment, world.store).verify()
    assert not report.verified
    (failure,) = report.failure_lines()
    assert failure.startswith(f"round {rid}: privacy: {dodger.address} (round {rid}): its blob declares a DP mechanism")


def test_a_record_for_a_blob_without_a_mechanism_fails_the_audit(tmp_path: Path) -> None:
    world = world_of(tmp_path)
    rid, _ = world.operator.open_round(world.rule)
    updates, mechs = train_round(world, rid)
    odd = world.clients[0]
    for client, update, mech in zip(world.clients, updates, mechs, strict=True):
        if client is odd:  # a record, but the blob has no header: nothing supports the epsilon
            ref = client.upload(update)
            world.deployment.privacy.commit_update_with_privacy(
                rid, ref.content_hash, ref.uri, mech.epsilon_micro, mech.delta_atto, client.sign(rid, ref),
                sender=client.address)
        else:
            client.submit_private(rid, update, mech)
    finish(world, rid)
    (failure,) = Auditor(world.deployment, world.store).verify().failure_lines()
    assert failure.startswith(f"round {rid}: privacy: {odd.address} (round {rid}): records epsilon")
    assert "declares no DP mechanism" in failure


def test_the_budget_refuses_the_update_that_would_exceed_it_and_the_audit_still_verifies(tmp_path: Path) -> None:
    world = world_of(tmp_path, DemoConfig(**{**DP.__dict__, "dp_budget": 6.0}))
    assert world.deployment.privacy.default_budget() == 6_000_000
    row, _ = play_round(world)
    assert world.dp_refused == []
    rid, _ = world.operator.open_round(world.rule)
    updates, mechs = train_round(world, rid)
    client = world.clients[0]
    spent = world.deployment.privacy.spent_of(client.address).epsilon
    with pytest.raises(PrivacyBudgetExceeded) as info:
        client.submit_private(rid, updates[0], mechs[0])
    e = info.value
    assert (e.participant, e.spent_micro, e.requested_micro, e.budget_micro) == (
        client.address, spent, mechs[0].epsilon_micro, 6_000_000)
    assert "privacy budget exceeded" in str(e) and "> budget 6.000000" in str(e)
    assert world.deployment.rounds.commitment_of(rid, client.address) == bytes(32)  # nothing committed
    # the operator raises this participant's own budget: the same update is now accepted
    world.operator.set_privacy_budget(9.0, client.address)
    client.submit_private(rid, updates[0], mechs[0])
    for other, update, mech in zip(world.clients[1:], updates[1:], mechs[1:], strict=True):
        with pytest.raises(PrivacyBudgetExceeded):
            other.submit_private(rid, update, mech)
    finish(world, rid)
    report = Auditor(world.deployment, world.store).verify()
    assert report.verified, report.failure_lines()
    assert report.privacy[client.address]["budget"] == 9.0
    assert report.privacy[world.clients[1].address]["budget"] == 6.0


def test_a_dp_round_settled_by_merkle_root_streams_the_dp_blobs_and_audits(tmp_path: Path) -> None:
    """The Merkle aggregator streams blobs from files (safetensors slices); the DP header does not disturb it."""
    from fedledger.roles import MerkleAggregator

    world = world_of(tmp_path)
    rid, _ = world.operator.open_round(world.rule)
    updates, mechs = train_round(world, rid)
    for client, update, mech in zip(world.clients, updates, mechs, strict=True):
        client.submit_private(rid, update, mech)
    world.operator.close_round(rid)
    outcome, _, _ = MerkleAggregator(world.deployment, world.store, world.stack.aggregator).finalize(rid)
    assert len(outcome.accepted) == len(world.clients)
    report = Auditor(world.deployment, world.store).verify()
    assert report.verified, report.failure_lines()
    assert "results" in [c.name for c in report.rounds[0].checks]
    assert sorted(report.privacy) == sorted(c.address for c in world.clients)
