"""A few rounds end to end on the embedded stack (real in-process EVM, real blob store), then the audit:
it verifies honest rounds and names the round and the reason when something was tampered with."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from fedledger.audit import Auditor, verify_command
from fedledger.cli import main
from fedledger.demo import Consortium, DemoConfig, play_round, run_demo, submit_updates
from fedledger.history import ChainHistory
from fedledger.stack import embedded_stack
from trainer.aggregation import evaluate_round
from trainer.rules import RuleConfig, Status
from trainer.serialization import serialize
from fedledger.roles import fetch_params, gather_submissions

SMALL = DemoConfig(participants=6, byzantine=2, rounds=3, seed=1, clean_reference=False)


def quiet() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=200), buf


def consortium(tmp_path: Path, rounds: int) -> Consortium:
    world = Consortium(DemoConfig(participants=5, byzantine=1, rounds=rounds, seed=2), embedded_stack(tmp_path, seed=2))
    world.enroll()
    for _ in range(rounds):
        play_round(world)
    return world


@pytest.fixture(params=["embedded", "devnet"])
def stack_overrides(request: pytest.FixtureRequest, tmp_path: Path) -> dict:
    if request.param == "embedded":
        return {"stack": "embedded", "state_dir": tmp_path}
    devnet = request.getfixturevalue("devnet")
    return {"stack": "devnet", "devnet": devnet.cfg, "state_dir": tmp_path}


def test_small_demo_runs_rounds_and_verifies(stack_overrides: dict) -> None:
    console, _ = quiet()
    result = run_demo(DemoConfig(**{**SMALL.__dict__, **stack_overrides}), console)
    s = result.summary
    assert s["audit_verified"] is True and result.audit.verified
    assert [a.round_id for a in result.audit.rounds] == [1, 2, 3]
    # rule v3 may accept a near-orthogonal sign-flip (cosine just above -0.05), but at almost no weight and pay
    assert s["attacker_rejection_rate"] >= 0.6 and s["honest_rejection_rate"] == 0.0
    assert s["attacker_reward_share"] < 0.05
    assert s["final_accuracy"] > 0.7
    # the whole budget is split, less integer-division dust of at most one wei per participant
    assert all(100 * 10**18 - 6 <= r.minted <= 100 * 10**18 for r in result.rows)
    # both commitment paths were used: own transaction and relayed EIP-712 signature
    history = ChainHistory(result.deployment)
    commits = history.round(result.rows[0].round_id).commitments
    relayers = {c.relayer == c.participant for c in commits}
    assert relayers == {True, False}
    manifest = json.loads(Path(result.summary["manifest"]).read_text())
    assert manifest["contracts"]["FederatedRounds"] == result.deployment.rounds.address
    assert result.summary["stack"] == stack_overrides["stack"]


def test_audit_names_the_round_and_reason_when_a_stored_update_is_altered(tmp_path: Path) -> None:
    world = consortium(tmp_path, rounds=2)
    victim = next(c for c in ChainHistory(world.deployment).round(2).commitments)
    path = world.store.path_for(victim.cid)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    console, out = quiet()
    assert verify_command(Auditor(world.deployment, world.store), console) == 1
    text = out.getvalue()
    assert f"round 2: blobs: {victim.participant}: hash mismatch" in text
    assert "round 1: " not in text
    assert "audit FAILED" in text


def test_audit_of_a_small_round_names_the_earlier_round_whose_accepted_update_it_cannot_read(tmp_path: Path) -> None:
    """Rule version 5: a round of 5 takes round 1's accepted updates as third parties of its pair test; when one
    of them was altered in the store, round 2's audit says which round's updates it needed, and why."""
    world = consortium(tmp_path, rounds=2)
    history = ChainHistory(world.deployment)
    accepted = {s.participant for s in history.round(1).scored if s.status == Status.ACCEPTED}
    victim = next(c for c in history.round(1).commitments if c.participant in accepted)
    path = world.store.path_for(victim.cid)
    path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 0x01]))

    console, out = quiet()
    assert verify_command(Auditor(world.deployment, world.store), console) == 1
    text = out.getvalue()
    assert f"round 1: blobs: {victim.participant}: hash mismatch" in text
    assert ("round 2: scores: round 1's accepted updates are third parties of round 2's redundancy test (rule "
            "version 5) and cannot be read") in text


def closed_round(tmp_path: Path) -> tuple[Consortium, int, dict, list]:
    """One honest round finalized, a second with everyone's updates committed and closed, not finalized."""
    world = consortium(tmp_path, rounds=1)
    round_id, _ = world.operator.open_round(world.rule)
    submit_updates(world, round_id)
    world.operator.close_round(round_id)
    record = ChainHistory(world.deployment).round(round_id)
    base = fetch_params(world.store, record.base_model_cid, record.base_model_hash)
    return world, round_id, base, gather_submissions(world.store, record)


def test_audit_catches_a_global_model_that_is_not_the_rules_output(tmp_path: Path) -> None:
    world, round_id, base, submissions = closed_round(tmp_path)
    # A rogue aggregator: honest-looking verdicts, but the model it commits is plain FedAvg over everyone.
    honest = evaluate_round(base, submissions, world.rule)
    rogue_model = evaluate_round(base, submissions, RuleConfig(aggregator="fedavg")).new_params
    ref = world.store.put(serialize(rogue_model))
    world.deployment.rounds.finalize_round(
        round_id, ref.content_hash, ref.uri,
        [v.participant for v in honest.verdicts], [v.score for v in honest.verdicts],
        [int(v.status) for v in honest.verdicts], sender=world.aggregator.address,
    )
    console, out = quiet()
    assert verify_command(Auditor(world.deployment, world.store), console) == 1
    text = out.getvalue()
    assert "round 2: aggregate: recomputed global model 0x" in text and "differs from committed" in text
    report = Auditor(world.deployment, world.store).verify()
    assert [r.round_id for r in report.rounds if not r.ok] == [2]


def test_audit_catches_decisions_that_do_not_follow_the_rule(tmp_path: Path) -> None:
    world, round_id, base, submissions = closed_round(tmp_path)
    honest = evaluate_round(base, submissions, world.rule)
    attacker = next(v for v in honest.verdicts if v.status in (Status.LOW_SCORE, Status.NORM_OUTLIER))
    ref = world.store.put(serialize(honest.new_params))
    world.deployment.rounds.finalize_round(
        round_id, ref.content_hash, ref.uri,
        [v.participant for v in honest.verdicts], [v.score for v in honest.verdicts],
        [0 if v.participant == attacker.participant else int(v.status) for v in honest.verdicts],
        sender=world.aggregator.address,
    )
    report = Auditor(world.deployment, world.store).verify(round_id)
    lines = report.failure_lines()
    assert any(
        line.startswith(f"round 2: decisions: {attacker.participant}: committed ACCEPTED with score {attacker.score}")
        and f"rule says {attacker.status.name} (" in line
        for line in lines
    ), lines


@pytest.mark.parametrize(("version", "local_steps", "local_training"),
                         [(3, "epochs", "2 epochs of batch 32"), (2, "4", "4 steps of batch 32")])
def test_cli_demo_writes_the_json_summary_and_exits_zero(tmp_path: Path, version: int, local_steps: str,
                                                         local_training: str) -> None:
    out = tmp_path / "summary.json"
    rc = main(["demo", "--participants", "4", "--byzantine", "1", "--rounds", "2", "--seed", "3",
               "--state-dir", str(tmp_path / "state"), "--json", str(out), "--rule-version", str(version),
               "--local-steps", local_steps])
    assert rc == 0
    summary = json.loads(out.read_text())
    assert summary["rule_version"] == version
    assert summary["local_training"].startswith(local_training)
    for key in ("final_accuracy", "clean_reference_accuracy", "attacker_reward_share", "attacker_rejection_rate",
                "honest_rejection_rate", "audit_verified", "rounds", "participants", "gas_used_total", "wall_seconds"):
        assert key in summary, key
    assert summary["audit_verified"] is True and summary["rounds"] == 2 and summary["gas_used_total"] > 0


def test_a_consortium_on_rule_version_2_commits_that_version_and_audits_under_it(tmp_path: Path) -> None:
    world = Consortium(DemoConfig(participants=5, byzantine=1, rounds=2, seed=2, rule_version=2),
                       embedded_stack(tmp_path, seed=2))
    world.enroll()
    for _ in range(2):
        play_round(world)
    history = ChainHistory(world.deployment)
    docs = [json.loads(world.store.get(history.round(r).rule_cid, history.round(r).rule_hash)) for r in (1, 2)]
    assert [d["version"] for d in docs] == [2, 2] and all("reference_gate_ppm" not in d for d in docs)
    assert Auditor(world.deployment, world.store).verify().verified


def test_cli_rejects_impossible_configurations_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--participants", "3", "--byzantine", "5"]) == 2
    assert "--byzantine must be in [0, 3], got 5" in capsys.readouterr().err
    assert main(["demo", "--rounds", "2", "--unpaid-rounds", "2"]) == 2
    assert "--unpaid-rounds must be in [0, 1] (--rounds 2), got 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--local-steps", "0"])
    assert "local steps must be at least 1, got 0" in capsys.readouterr().err


def test_unpaid_first_rounds_mint_nothing_and_still_build_reputation_and_verify(tmp_path: Path) -> None:
    console, _ = quiet()
    result = run_demo(DemoConfig(**{**SMALL.__dict__, "state_dir": tmp_path, "unpaid_rounds": 1}), console)
    assert [r.minted for r in result.rows][0] == 0 and all(r.minted > 0 for r in result.rows[1:])
    assert result.summary["tokens_minted"] == 200.0 and result.summary["unpaid_rounds"] == 1
    history = ChainHistory(result.deployment)
    assert history.round(1).reward_budget == 0 and history.round(2).reward_budget == 100 * 10**18
    assert any(s.reputation != 500_000 for s in history.round(1).scored)  # the rule ran: reputation moved
    assert result.audit.verified


def test_the_demos_split_sybils_train_each_wallet_on_its_own_slice_of_the_attackers_pooled_data(tmp_path: Path) -> None:
    import numpy as np
    import torch

    from trainer.attacks import split_shard
    from trainer.local import train_local
    from trainer.model import init_params
    from trainer.simulation import local_seed

    cfg = DemoConfig(participants=5, byzantine=2, attack="sybil_split", rounds=1, seed=3, clean_reference=False)
    world = Consortium(cfg, embedded_stack(tmp_path, seed=3))
    base = init_params(world.spec, 3)
    sent = world.round_updates([base] * 5, 1)
    slices = split_shard(np.sort(np.concatenate(world.parts[:2])), 2, seed=3)
    for i in (0, 1):  # wallet i: slice i of the two attackers' pooled data, its own training seed
        idx = torch.from_numpy(slices[i])
        expected = train_local(world.spec, base, world.data.x_train[idx], world.data.y_train[idx], world.local,
                               seed=local_seed(3, 1, i))
        assert all(torch.equal(sent[i][k], expected[k]) for k in expected)
    honest = train_local(world.spec, base, world.data.x_train[torch.from_numpy(world.parts[2])],
                         world.data.y_train[torch.from_numpy(world.parts[2])], world.local, seed=local_seed(3, 1, 2))
    assert all(torch.equal(sent[2][k], honest[k]) for k in honest)


def test_the_demo_on_a_consortiums_registry_admits_its_wallets_and_refuses_an_outsider(tmp_path: Path) -> None:
    console, buf = quiet()
    result = run_demo(DemoConfig(participants=4, byzantine=1, rounds=1, seed=4, clean_reference=False,
                                 admission=True, state_dir=tmp_path), console)
    s = result.summary
    assert (s["registration"], s["admission_refused"], s["audit_verified"]) == ("admission", ["RegistryNotAdmitted"],
                                                                              True)
    registry = result.deployment.registry
    assert registry.admission_required() is True and registry.participant_count() == 4
    assert "an outsider's registration was refused" in buf.getvalue()
    assert run_demo(DemoConfig(participants=3, byzantine=0, rounds=1, seed=4, clean_reference=False,
                               state_dir=tmp_path / "open"), quiet()[0]).summary["registration"] == "open"
    with pytest.raises(ValueError, match="devnet up --admission"):
        DemoConfig(admission=True, stack="devnet")


def test_merkle_settlement_in_the_demo_pays_by_claims_what_legacy_pays_on_chain_and_verifies(tmp_path: Path) -> None:
    """The same demo settled legacy (rule 5) and by Merkle root (rule 6, which judges as 5 and, with the equal stakes
    every wallet holds at the open, pays as 5): the same rounds, verdicts, rewards and slashes; under Merkle every
    reward reaches the wallet only by its claim."""
    base = dict(participants=5, byzantine=2, rounds=2, seed=5, clean_reference=False)
    console, _ = quiet()
    legacy = run_demo(DemoConfig(**base, state_dir=tmp_path / "legacy"), console)
    merkle = run_demo(DemoConfig(**base, rule_version=6, settlement="merkle", state_dir=tmp_path / "merkle"), console)
    assert legacy.summary["settlement"] == "legacy" and merkle.summary["settlement"] == "merkle"
    assert merkle.audit.verified and legacy.audit.verified
    same = ("round_id", "accuracy", "accepted", "rejected", "minted", "attacker_rewards", "attacker_slashed",
            "honest_slashed", "model_hash")
    assert [[getattr(r, k) for k in same] for r in merkle.rows] == [[getattr(r, k) for k in same] for r in legacy.rows]
    assert sum(r.attacker_slashed for r in merkle.rows) > 0 and all(r.minted > 99 * 10**18 for r in merkle.rows)
    d, history = merkle.deployment, ChainHistory(merkle.deployment)
    assert all(history.round(r).results is not None for r in (1, 2))  # settled by root, not per participant
    wallets = {c.participant for c in history.round(1).commitments}
    assert len(wallets) == 5
    for wallet in wallets:
        paid = sum(e.args.reward for e in history.events("RewardClaimed", participant=wallet))
        assert d.token.balance_of(wallet) == paid and all(d.rounds.is_claimed(r, wallet) for r in (1, 2))


@pytest.mark.parametrize("version", [7, 8])
def test_the_demo_settles_rule_versions_7_and_8_by_merkle_root_and_refuses_stake_rules_on_legacy(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], version: int) -> None:
    console, _ = quiet()
    result = run_demo(DemoConfig(participants=5, byzantine=1, rounds=2, seed=6, clean_reference=False,
                                 rule_version=version, settlement="merkle", state_dir=tmp_path), console)
    history = ChainHistory(result.deployment)
    docs = [json.loads(result.store.get(history.round(r).rule_cid, history.round(r).rule_hash)) for r in (1, 2)]
    assert [d["version"] for d in docs] == [version, version]
    assert result.audit.verified and result.summary["rule_version"] == version
    assert result.summary["tokens_minted"] > 199
    assert main(["demo", "--rule-version", str(version)]) == 2
    assert (f"--rule-version {version} splits rewards by stake, which only Merkle settlement pays: add --settlement "
            "merkle") in capsys.readouterr().err


def test_rule_version_8_by_merkle_root_on_the_real_devnet_with_stakes_replayed_from_hardhats_logs(
        own_devnet: Any, tmp_path: Path) -> None:
    """The demo on a Hardhat + Kubo devnet of this module's own (the shared one's later users expect legacy rounds)
    under rule version 8: rounds settled by root and claimed, the audit
    verifies, and the stakes the aggregator and the auditor replayed from the node's logs are what the registry says
    at each round's open block."""
    from fedledger.settlement import stakes_at_open

    console, _ = quiet()
    cfg = DemoConfig(participants=4, byzantine=1, rounds=2, seed=8, clean_reference=False, rule_version=8,
                     settlement="merkle", stack="devnet", devnet=own_devnet.cfg, state_dir=tmp_path)
    result = run_demo(cfg, console)
    assert result.audit.verified and result.summary["stack"] == "devnet"
    history, registry = ChainHistory(result.deployment), result.deployment.registry
    for row in result.rows:
        rec = history.round(row.round_id)
        assert rec.results is not None
        who = [c.participant for c in rec.commitments]
        assert stakes_at_open(history, rec, who) == [registry.stake_of(p, block=rec.opened_block).amount for p in who]
    assert result.summary["attacker_stake_lost_eth"] > 0  # the sign-flipper was slashed by proof, and topped up
