"""The spine's acceptance figures, on the default demo configuration (digits, 10 participants, 3 sign-flippers
scaling by -4, Dirichlet 0.5, 10 rounds, seed 0). Behaviour, not timing: wall time is reported by the demo."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from fedledger.demo import DemoConfig, run_demo


def run(tmp_path: Path, **overrides: object) -> dict:
    cfg = DemoConfig(state_dir=tmp_path, clean_reference=False, **overrides)  # type: ignore[arg-type]
    return run_demo(cfg, Console(file=io.StringIO())).summary


@pytest.mark.slow
def test_default_demo_meets_the_robustness_and_incentive_targets(tmp_path: Path) -> None:
    s = run(tmp_path)
    assert s["final_accuracy"] >= 0.85
    assert s["attacker_reward_share"] <= 0.05
    assert s["attacker_rejection_rate"] >= 0.9
    assert s["honest_rejection_rate"] <= 0.1
    assert s["audit_verified"] is True


@pytest.mark.slow
def test_the_attack_is_real_plain_fedavg_collapses(tmp_path: Path) -> None:
    s = run(tmp_path, aggregator="fedavg")
    assert s["final_accuracy"] <= 0.2
    assert s["audit_verified"] is True  # the audit proves the rule was followed, not that the rule is good


@pytest.mark.slow
def test_lazy_attackers_earn_nothing_and_sybils_earn_one_share(tmp_path: Path) -> None:
    stale = run(tmp_path / "stale", attack="freerider_stale", rounds=3)
    assert stale["attacker_reward_share"] == 0.0 and stale["attacker_rejection_rate"] == 1.0
    assert stale["audit_verified"] is True
    sybil = run(tmp_path / "sybil", attack="sybil", rounds=3)
    # 3 wallets sending one update earn together about what one of the 8 distinct senders earns, not 3 shares
    assert 0.0 < sybil["attacker_reward_share"] < 1.5 / 8
    assert sybil["audit_verified"] is True


@pytest.mark.slow
def test_the_demo_reports_backdoor_success(tmp_path: Path) -> None:
    s = run(tmp_path, attack="backdoor", rounds=3)
    assert 0.0 <= s["backdoor_success"] <= 1.0 and s["audit_verified"] is True
    with pytest.raises(ValueError, match="unknown --attack 'nope'"):
        DemoConfig(attack="nope")


@pytest.mark.slow
def test_perturbed_sybils_share_one_score_in_a_round_of_twenty_and_the_audit_agrees(tmp_path: Path) -> None:
    """Rule version 4's redundancy groups end to end (chain, blob store, settlement, audit): 4 identities sending
    copies of one update perturbed by fresh noise, among 16 honest participants (20 representatives: the pair test
    runs on the round alone, as in version 4; version 5 judges such rounds the same)."""
    kw = {"participants": 20, "byzantine": 4, "attack": "sybil_perturbed", "rounds": 3}
    result = run_demo(DemoConfig(state_dir=tmp_path / "v4", clean_reference=False, **kw),  # type: ignore[arg-type]
                      Console(file=io.StringIO()))
    v4 = result.summary
    v3 = run(tmp_path / "v3", rule_version=3, **kw)
    # the audit re-derives the group and says why: one leader, three members naming it, one score for the four
    assert [a.round_id for a in result.audit.rounds] == [1, 2, 3]
    for audit in result.audit.rounds:
        group = [v for v in audit.verdicts if v.group_size > 1]
        assert [v.group_size for v in group] == [4] * 4, [(v.participant, v.group_size) for v in audit.verdicts]
        assert [v.detail for v in group].count("") == 1
        leader = next(v.participant for v in group if not v.detail)
        assert all(v.detail.startswith(f"redundant with {leader} ") for v in group if v.detail)
    assert v4["rule_version"] == 5 and v3["rule_version"] == 3
    assert not any("earlier rounds" in v.detail for a in result.audit.rounds for v in a.verdicts)
    assert v4["audit_verified"] is True and v3["audit_verified"] is True  # the grouped scores recompute
    # version 4: the four wallets earn together about one honest identity (measured 0.93 of it); version 3 paid
    # each wallet as one
    assert 0.0 < 4 * v4["attacker_reward_per_identity_fed"] < 1.2 * v4["honest_reward_per_identity_fed"]
    assert v3["attacker_reward_per_identity_fed"] > 0.5 * v3["honest_reward_per_identity_fed"]


@pytest.mark.slow
def test_perturbed_sybils_share_one_score_in_a_small_round_once_it_has_history_and_the_audit_agrees(
    tmp_path: Path,
) -> None:
    """Rule version 5 end to end on the default demo (10 participants: 10 representatives, too few third parties
    for the round alone): 3 identities sending perturbed copies of one update. Round 1 has no earlier round, so
    each copy is paid as one update; from round 2 on the previous round's accepted updates are third parties, the
    three form one group, and the audit re-derives it from the chain and the blob store."""
    kw = {"attack": "sybil_perturbed", "rounds": 3}
    result = run_demo(DemoConfig(state_dir=tmp_path / "v5", clean_reference=False, **kw),  # type: ignore[arg-type]
                      Console(file=io.StringIO()))
    v5 = result.summary
    v4 = run(tmp_path / "v4", rule_version=4, **kw)
    assert v5["rule_version"] == 5 and v4["rule_version"] == 4
    assert v5["audit_verified"] is True and v4["audit_verified"] is True
    audits = result.audit.rounds
    assert [max(v.group_size for v in a.verdicts) for a in audits] == [1, 3, 3]
    for audit in audits[1:]:
        group = [v for v in audit.verdicts if v.group_size > 1]
        leader = next(v.participant for v in group if not v.detail)
        assert sum(v.detail.startswith(f"redundant with {leader} ") for v in group) == 2
        seen = f"and {10 * (audit.round_id - 1)} accepted updates of earlier rounds"  # 1 round, then 2 (the default)
        assert all(seen in v.detail for v in group if v.detail)
    # version 4 pays each of the three identities as a distinct update in every round; version 5 only in round 1
    assert v4["attacker_reward_per_identity_fed"] > 0.8 * v4["honest_reward_per_identity_fed"]
    assert 3 * v5["attacker_reward_per_identity_fed"] < 0.75 * 3 * v4["attacker_reward_per_identity_fed"]


def test_merkle_settled_small_rounds_take_their_history_from_the_result_lists(tmp_path: Path) -> None:
    """Rule version 5 on Merkle-committed rounds: the earlier rounds' accepted set comes from their result lists
    (not from per-participant events), the streamed rule groups the perturbed copies from round 2 on, and the audit
    re-derives every round the same way."""
    from fedledger.audit import Auditor
    from fedledger.demo import Consortium, submit_updates
    from fedledger.roles import MerkleAggregator
    from fedledger.stack import embedded_stack

    cfg = DemoConfig(participants=10, byzantine=3, attack="sybil_perturbed", rounds=3, clean_reference=False)
    world = Consortium(cfg, embedded_stack(tmp_path, seed=0))
    world.enroll()
    merkle = MerkleAggregator(world.deployment, world.store, world.stack.aggregator)
    sizes = []
    for _ in range(cfg.rounds):
        rid, _ = world.operator.open_round(world.rule)
        submit_updates(world, rid)
        world.operator.close_round(rid)
        outcome, _, _ = merkle.finalize(rid)
        sizes.append(max(v.group_size for v in outcome.verdicts))
        assert {v.participant for v in outcome.verdicts if v.group_size == 3} <= world.byzantine
    assert sizes == [1, 3, 3]
    report = Auditor(world.deployment, world.store).verify()
    assert report.verified, report.failure_lines()
    assert [max(v.group_size for v in a.verdicts) for a in report.rounds] == sizes
    assert all("results" in [c.name for c in a.checks] for a in report.rounds)
