"""Rewards and reputation: integer mirrors of the formulas FederatedRounds.sol applies at finalization.

    weight_i     = accepted ? max(score_i, 0) : 0                          (score in 1e-6 units)
    reward_i     = budget * weight_i // sum(weight)                        (0 if the sum is 0; dust is not minted)
    reputation_i = (reputation_i * decay + weight_i * (1e6 - decay)) // 1e6

The contract computes these itself, so the aggregator cannot overpay; auditors recompute them here.
"""

from __future__ import annotations

from collections.abc import Sequence

from trainer.rules import PPM, Status

INITIAL_REPUTATION = 500_000


def weight(status: int, score: int) -> int:
    return max(score, 0) if status == Status.ACCEPTED else 0


def reward_split(budget: int, weights: Sequence[int]) -> list[int]:
    total = sum(weights)
    return [budget * w // total if total else 0 for w in weights]


def next_reputation(previous: int, weight_: int, decay_ppm: int) -> int:
    return (previous * decay_ppm + weight_ * (PPM - decay_ppm)) // PPM
