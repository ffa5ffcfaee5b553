"""The published verification rule: status codes and the parameters committed (by hash) with every round.

Rule "median-verified-mean" (the platform default), for the valid updates u_1..u_n of a round, participants sorted
by address:

    m      = coordinate-wise median of u_1..u_n                       (the robust reference; exact: a selection)
    cos_i  = <u_i, m> / (|u_i| |m|)                                   (0 when a norm is 0)
    r_i    = |u_i| / median_j |u_j|                                   (norm relative to a typical update)
    c_i    = min(1, max_norm_ratio / r_i)
    s_i    = cos_i * c_i                                              (contribution score, in [-1, 1])
    score  = round(s_i * 1e6)                                         (committed on-chain as int32)
    status = NORM_OUTLIER  if r_i > max_norm_ratio
             LOW_SCORE     elif score < round(min_score * 1e6)
             ACCEPTED      otherwise
    new    = base + m + (sum over accepted, in address order, of (u_i - m)) / k

Rule "fedavg": every valid update accepted, new = base + plain mean (the undefended baseline).
Rule "median": every valid update accepted, new = base + m.

Dot products and norms are computed as exactly rounded float64 sums (``math.fsum`` of exact float32 products),
so scores are reproducible bit for bit on any CPU; aggregates use element-wise IEEE float32 operations in a fixed
order. Why this rule, from measurements: see README ("Choosing the rule").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any


class Status(IntEnum):
    """Per-update verdict recorded on-chain (uint8). 0 is accepted; the rest say why not."""

    ACCEPTED = 0
    LOW_SCORE = 1  # scored below the rule's threshold against the median reference
    NORM_OUTLIER = 2  # norm more than max_norm_ratio times the median update norm
    UNAVAILABLE = 3  # the blob could not be fetched from the store
    HASH_MISMATCH = 4  # the fetched bytes do not hash to the committed content hash
    BAD_FORMAT = 5  # not safetensors, wrong dtype, missing or extra tensors
    WRONG_SHAPE = 6
    NON_FINITE = 7  # NaN or Inf

    @property
    def is_validity_failure(self) -> bool:
        return self >= Status.UNAVAILABLE


AGGREGATORS = ("median-verified-mean", "fedavg", "median")
SCORE_SCALE = 1_000_000  # fixed point of scores and reputation on-chain (1e-6)
PPM = 1_000_000


@dataclass(frozen=True)
class RuleConfig:
    aggregator: str = "median-verified-mean"
    min_score: float = -0.05  # reject updates clearly opposed to the median; near-orthogonal ones earn ~0 anyway
    max_norm_ratio: float = 2.0  # reject updates longer than 2x the median update norm (scaled attacks)
    score_tolerance: int = 1  # auditors accept |recomputed - committed| <= this many 1e-6 units
    reward_budget: int = 100 * 10**18  # FED (18 decimals) minted per round, split by contribution
    reputation_decay_ppm: int = 800_000  # rep' = rep * 0.8 + weight * 0.2
    version: int = 1

    def __post_init__(self) -> None:
        from trainer.errors import RuleError

        if self.aggregator not in AGGREGATORS:
            raise RuleError(f"unknown aggregator {self.aggregator!r}: choose one of {', '.join(AGGREGATORS)}")
        if not -1.0 <= self.min_score <= 1.0:
            raise RuleError(f"min_score must be in [-1, 1], got {self.min_score}")
        if self.max_norm_ratio <= 0:
            raise RuleError(f"max_norm_ratio must be > 0, got {self.max_norm_ratio}")
        if not 0 <= self.reputation_decay_ppm <= PPM:
            raise RuleError(f"reputation_decay_ppm must be in [0, {PPM}], got {self.reputation_decay_ppm}")
        if self.reward_budget < 0:
            raise RuleError(f"reward_budget must be >= 0, got {self.reward_budget}")

    @property
    def min_score_fixed(self) -> int:
        return round(self.min_score * SCORE_SCALE)

    def to_document(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["reward_budget"] = str(self.reward_budget)  # JSON-safe big integer
        doc["formulas"] = "trainer/rules.py docstring, fedledger v1"
        return doc

    def canonical_bytes(self) -> bytes:
        return json.dumps(self.to_document(), sort_keys=True, separators=(",", ":")).encode()

    def rule_hash(self) -> bytes:
        return hashlib.sha256(self.canonical_bytes()).digest()

    @classmethod
    def from_bytes(cls, data: bytes) -> RuleConfig:
        from trainer.errors import RuleError

        try:
            doc = json.loads(data)
            doc.pop("formulas", None)
            doc["reward_budget"] = int(doc["reward_budget"])
            return cls(**doc)
        except (ValueError, KeyError, TypeError) as exc:
            raise RuleError(f"not a rule document: {exc}") from exc
