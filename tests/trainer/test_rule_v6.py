"""Rule v6 (trainer/rules.py, trainer/incentives.py): version 5 whose rewards are split by score times stake. Its
document is version 5's with the version number changed (old documents keep their hashes); splitting one stake
across identities does not change what the stake earns; the verdicts are version 5's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.aggregation import Submission, evaluate_round
from trainer.errors import RuleError
from trainer.incentives import reward_split, stake_weights, weight
from trainer.rules import RuleConfig, Status
from trainer.serialization import serialize

BUDGET = 100 * 10**18
UNIT = 10**18


def test_version_6_is_version_5_with_stake_weighted_rewards_and_its_document_round_trips() -> None:
    v6, v5 = RuleConfig.version6(), RuleConfig()
    assert v6.stake_weighted and not v5.stake_weighted and not RuleConfig.version4().stake_weighted
    assert v6.history_rounds == v5.history_rounds and v6.groups_redundant and v6.weighted
    doc6, doc5 = v6.to_document(), v5.to_document()
    assert {k: v for k, v in doc6.items() if k not in ("version", "formulas")} == {
        k: v for k, v in doc5.items() if k not in ("version", "formulas")}
    assert RuleConfig.from_bytes(v6.canonical_bytes()) == v6
    assert v6.rule_hash() != v5.rule_hash()
    with pytest.raises(RuleError, match="unknown rule version 9"):
        RuleConfig(version=9)


def test_splitting_a_stake_across_identities_earns_what_the_one_identity_earns() -> None:
    """One identity staking 3 units with weight w earns what three identities of one unit each with weight w earn
    together (up to the integer floor of each share), against the same honest rest."""
    honest = [(700_000, UNIT), (650_000, UNIT), (0, UNIT)]  # the last was rejected: weight 0
    w = 500_000
    alone = reward_split(BUDGET, stake_weights([w, *(h for h, _ in honest)], [3 * UNIT, *(s for _, s in honest)]))
    split = reward_split(BUDGET, stake_weights([w] * 3 + [h for h, _ in honest], [UNIT] * 3 + [s for _, s in honest]))
    assert abs(sum(split[:3]) - alone[0]) <= 2
    assert split[3:] == alone[1:]
    assert alone[-1] == 0
    # by score alone (versions 1 to 5) the three identities earn nearly twice the one (52.6 against 27.0 FED: they
    # also take the honest participants' share of the budget)
    by_score_alone = reward_split(BUDGET, [w, *(h for h, _ in honest)])
    by_score_split = reward_split(BUDGET, [w] * 3 + [h for h, _ in honest])
    assert 10 * sum(by_score_split[:3]) > 19 * by_score_alone[0]


def test_stake_weights_refuse_misaligned_or_negative_stakes() -> None:
    assert stake_weights([2, 0, 5], [3, 7, 0]) == [6, 0, 0]
    with pytest.raises(ValueError, match="2 weights but 3 stakes"):
        stake_weights([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="stakes must be >= 0, got -1"):
        stake_weights([1, 2], [1, -1])


def test_version_6_judges_and_aggregates_exactly_as_version_5() -> None:
    rng = np.random.default_rng(6)
    base = {"w": torch.zeros(4, 30), "b": torch.zeros(4)}
    direction = rng.standard_normal(124)
    subs = []
    for i in range(9):
        flat = direction + 0.3 * rng.standard_normal(124)
        if i == 0:
            flat = -4 * flat  # a scaled sign-flip: rejected
        t = torch.from_numpy(flat.astype(np.float32))
        subs.append(Submission(f"0x{i + 1:040x}", serialize({"w": t[:120].reshape(4, 30), "b": t[120:]})))
    out5 = evaluate_round(base, subs, RuleConfig())
    out6 = evaluate_round(base, subs, RuleConfig.version6())
    assert out6.verdicts == out5.verdicts
    assert all(torch.equal(out6.new_params[k], out5.new_params[k]) for k in base)
    assert out5.verdicts[0].status != Status.ACCEPTED
    assert [weight(v.status, v.score) for v in out6.verdicts][0] == 0
