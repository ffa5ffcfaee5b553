"""Rewards and reputation: integer mirrors of the formulas FederatedRounds.sol applies at finalization.

    weight_i     = accepted ? max(score_i, 0) : 0                          (score in 1e-6 units)
    reward_i     = budget * weight_i // sum(weight)                        (0 if the sum is 0; dust is not minted)
    reputation_i = (reputation_i * decay + weight_i * (1e6 - decay)) // 1e6

The contract computes these itself, so the aggregator cannot overpay; auditors recompute them here.

Rule version 6 (open registries) splits the budget by weight times stake, so splitting one stake across k
identities earns nothing: ``reward_i = budget * weight_i * stake_i // sum(weight_j * stake_j)``, stake_i the
registry's stake amount at the block that opened the round. Reputation stays the score's EMA. Merkle settlement
only: the result list carries the rewards, the contract caps their total at the budget, auditors recompute them.

Stake (ParticipantRegistry): a committer whose update the round rejects as poisoned (a status in SLASHABLE) loses
``stake * SLASH_PPM // 1e6`` of its current stake, burned; unavailable blobs (maybe the store's fault) and
free-riders (paid nothing anyway) are not slashed. The robustness bench uses this to price attacks in stakes.
These are the default deployment's parameters (fedledger/wiring.py ``default_stake_params`` hands them to
chain/deploy.py); FederatedRounds.SLASHABLE_MASK and ParticipantRegistry.slash compute the same on-chain.
"""

from __future__ import annotations

from collections.abc import Sequence

from trainer.rules import PPM, Status

INITIAL_REPUTATION = 500_000
SLASH_PPM = 100_000  # the default deployment's share of the current stake a slashable rejection burns
MIN_STAKE = 10**18  # wei (1 devnet ether) an identity locks to register and must keep to commit
# A withdrawal waits this long after its request and after the finalization of the last round the identity committed
# to: settlement (the Merkle aggregator's slash proofs) happens within minutes of finalization; 7 days leaves room.
WITHDRAWAL_DELAY_S = 7 * 24 * 3600
SLASHABLE = frozenset({Status.LOW_SCORE, Status.NORM_OUTLIER, Status.HASH_MISMATCH, Status.BAD_FORMAT,
                       Status.WRONG_SHAPE, Status.NON_FINITE})


def slashed(stake: int, status: int, slash_ppm: int = SLASH_PPM) -> int:
    """What one round's verdict burns of a stake (0 unless the status is slashable)."""
    return stake * slash_ppm // PPM if status in SLASHABLE else 0


def slashable_mask(statuses: frozenset[Status] = SLASHABLE) -> int:
    """The bitmask FederatedRounds.SLASHABLE_MASK must equal (bit s: status s is slashable)."""
    return sum(1 << int(s) for s in statuses)


def weight(status: int, score: int) -> int:
    return max(score, 0) if status == Status.ACCEPTED else 0


def stake_weights(weights: Sequence[int], stakes: Sequence[int]) -> list[int]:
    """Rule version 6's reward weights: each verdict's weight times its identity's stake (wei) at the round's open."""
    if len(weights) != len(stakes):
        raise ValueError(f"{len(weights)} weights but {len(stakes)} stakes")
    if any(s < 0 for s in stakes):
        raise ValueError(f"stakes must be >= 0, got {min(stakes)}")
    return [w * s for w, s in zip(weights, stakes, strict=True)]


def reward_split(budget: int, weights: Sequence[int]) -> list[int]:
    total = sum(weights)
    return [budget * w // total if total else 0 for w in weights]


def next_reputation(previous: int, weight_: int, decay_ppm: int) -> int:
    return (previous * decay_ppm + weight_ * (PPM - decay_ppm)) // PPM
