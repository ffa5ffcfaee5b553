"""The published verification rule: status codes and the parameters committed (by hash) with every round.

Rule "median-verified-mean" (the platform default), version 2, for the valid updates u_1..u_n of a round,
participants sorted by address, and the public vectors P = {0, g} (g: the previous round's global step, base_r -
base_{r-1} in float32; only 0 in round 1):

    S      = the round's column subset: all d columns when d <= 4096, otherwise 4096 columns drawn from
             sha256(the valid updates' content hashes in address order) (trainer.aggregation.subset_columns):
             fixed only once every update is committed, so no update can be aimed at it
    x|S    = x restricted to the columns S
    R      = duplicate_tolerance * median_i |u_i|S|                  (the copy radius)
    D(a,b) = sqrt((|a|S|^2 + |b|S|^2) - 2 <a|S, b|S>)                (exact sums, then float64 in this order)
    free-rider: D(u_i, p) <= R for some p in P                        -> FREE_RIDE, score 0
    groups: each other update joins the group of the first earlier representative within R (address order),
            otherwise it is the representative of a new group; g = the size of its group
    m      = coordinate-wise median of the representatives            (the robust reference; exact: a selection)
    cos_i  = <u_i, m> / (|u_i| |m|)                                   (0 when a norm is 0; all d columns)
    r_i    = |u_i| / median over representatives of |u_j|              (norm relative to a typical update)
    c_i    = min(1, max_norm_ratio / r_i)                              (clip factor)
    s_i    = cos_i * c_i                                               (contribution, in [-1, 1])
    status = NORM_OUTLIER  if r_i > reject_norm_ratio
             LOW_SCORE     elif round(s_i * 1e6) < round(min_score * 1e6)
             ACCEPTED      otherwise                                   (every member takes its representative's)
    score  = round(s_i * 1e6 / g)                                      (committed on-chain as int32: a group of
                                                                        copies earns together what one update earns)
    new    = base + (m + (sum over accepted representatives, in address order, of (c_i u_i - m)) / k)

Version 3 (issue 13; the default until version 4) is version 2 with a reputation-gated reference and trust-weighted
aggregation. With R_i the participant's on-chain reputation before the round (ppm; fedledger.settlement's
ReputationLedger: the reputation after the newest earlier finalized round it took part in, INITIAL_REPUTATION
before its first) and S_i = round(s_i * 1e6) the representative's undivided score (an integer):

    gate   = the representatives with R_i * 1e6 >= reference_gate_ppm * median_low_j(R_j)   (at least half of them)
    m      = coordinate-wise median of the gate (not of all representatives); cos_i, r_i, c_i, s_i as in version 2
    W_i    = max(S_i, 0) ** score_weight_power * R_i ** reputation_weight_power   (exact integers; accepted only)
    f_i    = float32(W_i / sum_j W_j)  (correctly rounded integer division; f_i = float32(1 / k) when sum W = 0)
    new    = base + (m + (sum over accepted representatives, in address order, of (c_i u_i - m) * f_i))

Scores, statuses, rewards and reputation are computed as in version 2 (against the gated median). Why: a trust
score that is the ReLU of the cosine to a reference (FLTrust, Cao et al., NDSS 2021, with the coordinate-wise median
as the reference instead of a server-held root data set) times a reputation built from past scores (RFFL, Xu and
Lyu, 2021) gives near-orthogonal updates (label-flip, bit-flip at 30 %) and the small-norm backdoor little weight,
and the gate keeps participants whose past updates scored poorly out of the referee. Measurements: README
("The rule, version 3") and docs/robustness.md.

Version 4 (the default from the perturbed-sybil measurements of issue 13 until version 5) is version 3 with
redundancy groups, so that copies perturbed by fresh noise count once in the reference, the score and the weight, as
exact copies do (trainer/redundancy.py has the pair test, its arithmetic and its measurements). After the copy groups
and free-riders, before the median:

    redundant(i, j) = trainer.redundancy's pair test on the subset columns, every representative a third party
                (redundancy_ratio, redundancy_share, redundancy_min_third_parties); it runs only when the s subset
                columns leave room, s >= 2 * redundancy_ratio * k (k = representatives - 2)
    groups    : each representative, in address order, joins the redundancy group of the first earlier leader it is
                redundant with (its exact copies with it); g = the updates in the group
    m         = coordinate-wise median of the gate (version 3's, by reputation) of the leaders: one vote per group,
                so identities cannot outvote distinct updates (the price: honest updates that differ from each other
                only by noise count once too; measured honest pairs never do, trainer/redundancy.py)
    r_i       = |u_i| / the median norm of the leaders
    every representative is scored and decided against m on its own; score = round(s_r * 1e6 / g) for every update
                of a group, s_r of its own representative (a group earns one update's score, split)
    W_L       = max(S, 0) ** score_weight_power * R ** reputation_weight_power   (S, R: the undivided score and the
                reputation of the group's first accepted representative)
    f_r       = float32(W_L / (k_L * sum over groups of W))  for each of the k_L accepted representatives of L's
                group (the group weighs what one update weighs, its members averaged: their noise partly cancels)
    new       = base + (m + (sum over accepted representatives, in address order, of (c_r u_r - m) * f_r))

Version 5 (the default since the small-round measurements of issue 13) is version 4 whose small rounds borrow third
parties from the past. Version 4 runs the pair test only from redundancy_min_third_parties + 2 representatives (with
fewer third parties their span cannot show how honest updates differ), so below that perturbed copies were paid per
identity. Version 5, in a round whose representatives number fewer than redundancy_min_third_parties + 2:

    history   = the updates accepted (status ACCEPTED) by rounds r-1, r-2, ..., r-redundancy_history_rounds that were
                finalized and whose updates have the round's parameter shapes, newest round first, ascending address
                within a round, at the round's subset columns S; at most trainer.redundancy.history_room of them
                (the first ones: the test keeps room, s >= 2 * redundancy_ratio * k)
    redundant(i, j) = version 4's pair test with the history rows among every pair's third parties
                (k = representatives - 2 + history rows; still only when k >= redundancy_min_third_parties)

The history rows are third parties only (never tested, grouped, scored or aggregated). Rounds of at least
redundancy_min_third_parties + 2 representatives are judged exactly as by version 4. Measurements:
docs/robustness/v5/small_rounds_history.md.

Version 6 (opt-in, for open registries) is version 5 whose rewards are paid by stake as well as by score. The
verdicts, scores, aggregate and reputation are version 5's; only the reward weights change
(trainer/incentives.py):

    reward_i  = budget * weight_i * stake_i // sum(weight_j * stake_j)
    stake_i   = ParticipantRegistry.stakeOf(i).amount at the block that opened the round (0 if not staked then)

Splitting data, or copies of an update, across k identities then earns what one identity with the same total stake
earns, up to the difference in their scores, so identities earn nothing by themselves; each still locks the minimum
stake. The stake-weighted split needs Merkle settlement (``finalizeRoundWithResults``): the legacy
``finalizeRound`` computes rewards on-chain by score alone. Measurements: docs/robustness/v6/stake_rewards.md.

Version 7 (opt-in, for open registries) is version 6 whose medians count stake as votes. With T_L the largest
stake at the open (version 6's stake_i) among the updates of leader L's redundancy group, exact copies included (so
copies add no votes: a group still votes as one update, as in version 4, with the stake of its largest member):

    v_L       = T_L * 2**32 // sum over the gate's leaders of T (exact integers), divided by their greatest common
                divisor; a leader with v_L = 0 does not vote
    m         = the weighted coordinate-wise median of the gate's leaders: the median of the multiset in which each
                leader's update appears v_L times (sum v odd: its middle element; even: lo*0.5 + hi*0.5 of the two
                middle ones, float32); ties (equal values, +0.0 and -0.0 among them) in address order
    typical   = the same weighted median of the leaders' norms (float64, the two middle ones averaged), with the
                votes computed over all leaders
    r_i, s_i and everything else as in version 6

When every voting leader has the same v (equal stakes, or no stake at all), m and typical are version 6's exactly.
Why: under version 6, k wallets with slices of one data set are k votes in the median while one identity with the
same data and the same total stake is one, so the wallets pull the reference toward their data and out-score it
(docs/robustness/v6/stake_rewards.md). Version 7 gives the one identity the votes its stake buys. The price is a
stake-weighted honest majority: a party holding half the gate's stake decides the reference, as one holding half the
identities does under version 6. Measurements: docs/robustness/v7/stake_votes.md.

Version 8 (opt-in, for open registries) is version 7 whose norm test also counts stake: a group holding a times the
median stake is allowed a times the norm, as a identities would be (each one typical norm; a updates of a typical
norm, summed, are up to a typical norms long). With T_L as in version 7:

    a_L       = max(1, T_L / median_low over all leaders of T)   (a float64 quotient of exact integers; 1 when the
                median stake is 0)
    r_i       = |u_i| / (typical * a_L)                          (L: the leader of i's redundancy group)
    c_i, s_i, status and everything else as in version 7, with this r_i

So the clip still bounds what one update adds to the aggregate, at max_norm_ratio * a_L typical norms: what a
identities, each clipped at max_norm_ratio typical norms, add together. Where every group holds at most the median
stake (equal stakes, or no stake at all), version 8 is version 7 exactly. Why: under versions 6 and 7 one identity
that trains its whole data set sends an update as long as the several identities its data would make up send
together; from about 4 participants' worth of data (2 epochs) it is a norm outlier, rejected and slashed, so splitting
the data paid again (docs/robustness/v7/stake_votes.md). Measurements: docs/robustness/v8/stake_allowance.md.

Version 1 (rounds committed before the revision; a document without the new fields) is the same rule with
``reject_norm_ratio = max_norm_ratio`` and no copy or free-rider detection (every update its own group).

Rule "fedavg": every valid update accepted, new = base + plain mean (the undefended baseline).
Rule "median": every valid update accepted, new = base + m.

Dot products and norms are computed as exactly rounded float64 sums (``math.fsum`` of exact float32 products),
so scores and distances are reproducible bit for bit on any CPU; aggregates use element-wise IEEE float32 operations
in a fixed order. Why this rule, from measurements: see README ("Choosing the rule") and docs/robustness.md.
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
    FREE_RIDE = 8  # within the copy radius of a public vector (the zero update, the previous global step)

    @property
    def is_validity_failure(self) -> bool:
        """The blob itself was unusable (as opposed to a valid update the rule rejected)."""
        return Status.UNAVAILABLE <= self <= Status.NON_FINITE


AGGREGATORS = ("median-verified-mean", "fedavg", "median")
_V3_FIELDS = frozenset({"reference_gate_ppm", "score_weight_power", "reputation_weight_power"})
_V4_FIELDS = frozenset({"redundancy_ratio", "redundancy_share", "redundancy_min_third_parties"})
_V5_FIELDS = frozenset({"redundancy_history_rounds"})
VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8)
SCORE_SCALE = 1_000_000  # fixed point of scores and reputation on-chain (1e-6)
PPM = 1_000_000
MAX_HISTORY_ROUNDS = 8  # version 5: previous rounds a small round may take third parties from


@dataclass(frozen=True)
class RuleConfig:
    aggregator: str = "median-verified-mean"
    min_score: float = -0.05  # reject updates clearly opposed to the median; near-orthogonal ones earn ~0 anyway
    max_norm_ratio: float = 2.0  # longer updates are scaled down to 2x the median update norm (and score less)
    reject_norm_ratio: float = 4.0  # and rejected beyond 4x (scaled attacks)
    duplicate_tolerance: float | None = 0.1  # copy radius in median norms; None: no copy/free-rider detection
    score_tolerance: int = 1  # auditors accept |recomputed - committed| <= this many 1e-6 units
    reward_budget: int = 100 * 10**18  # FED (18 decimals) minted per round, split by contribution
    reputation_decay_ppm: int = 800_000  # rep' = rep * 0.8 + weight * 0.2
    version: int = 5
    # versions 3 to 5 (not in the documents of versions 1 and 2): the reputation gate of the reference median and
    # the aggregation weights W_i = max(S_i, 0) ** score_weight_power * R_i ** reputation_weight_power
    reference_gate_ppm: int = 500_000
    score_weight_power: int = 1
    reputation_weight_power: int = 2
    # versions 4 and 5: redundancy groups (trainer/redundancy.py). Noise puts ~k/s of its energy in the others' span
    # (t ~ 1); measured honest pairs t >= 4.7 (>= 10.7 but on digits Dirichlet 0.1, n = 50), noisy copies t <= 2.2
    # (docs/robustness/v4/redundancy.md)
    redundancy_ratio: float = 4.0
    redundancy_share: float = 0.25  # |P d|^2 at most this share of the smaller |P u|^2 (no absorbing by long noise)
    redundancy_min_third_parties: int = 14  # fewer representatives than this + 2: no redundancy test (small rounds
    # group honest pairs: docs/robustness/v4/small_rounds.md)
    # version 5 only: in rounds of fewer representatives than redundancy_min_third_parties + 2, the accepted updates
    # of this many previous rounds join the pair test's third parties (docs/robustness/v5/small_rounds_history.md)
    redundancy_history_rounds: int = 2

    def __post_init__(self) -> None:
        from trainer.errors import RuleError

        if self.aggregator not in AGGREGATORS:
            raise RuleError(f"unknown aggregator {self.aggregator!r}: choose one of {', '.join(AGGREGATORS)}")
        if not -1.0 <= self.min_score <= 1.0:
            raise RuleError(f"min_score must be in [-1, 1], got {self.min_score}")
        if self.max_norm_ratio <= 0:
            raise RuleError(f"max_norm_ratio must be > 0, got {self.max_norm_ratio}")
        if self.reject_norm_ratio < self.max_norm_ratio:
            raise RuleError(
                f"reject_norm_ratio ({self.reject_norm_ratio}) must be >= max_norm_ratio ({self.max_norm_ratio})"
            )
        if self.duplicate_tolerance is not None and not 0 <= self.duplicate_tolerance < 1:
            raise RuleError(f"duplicate_tolerance must be in [0, 1) or None, got {self.duplicate_tolerance}")
        if self.version not in VERSIONS:
            raise RuleError(f"unknown rule version {self.version}: this fedledger knows versions 1 to {VERSIONS[-1]}")
        if not 0 < self.redundancy_ratio:
            raise RuleError(f"redundancy_ratio must be > 0, got {self.redundancy_ratio}")
        if not 0 < self.redundancy_share <= 1:
            raise RuleError(f"redundancy_share must be in (0, 1], got {self.redundancy_share}")
        if self.redundancy_min_third_parties < 1:
            raise RuleError(f"redundancy_min_third_parties must be >= 1, got {self.redundancy_min_third_parties}")
        if not 0 <= self.redundancy_history_rounds <= MAX_HISTORY_ROUNDS:
            raise RuleError(f"redundancy_history_rounds must be in [0, {MAX_HISTORY_ROUNDS}], got "
                            f"{self.redundancy_history_rounds}")
        if not 0 <= self.reference_gate_ppm <= PPM:
            raise RuleError(f"reference_gate_ppm must be in [0, {PPM}], got {self.reference_gate_ppm}")
        for name in ("score_weight_power", "reputation_weight_power"):
            if getattr(self, name) not in (0, 1, 2, 3):
                raise RuleError(f"{name} must be 0, 1, 2 or 3, got {getattr(self, name)}")
        if not 0 <= self.reputation_decay_ppm <= PPM:
            raise RuleError(f"reputation_decay_ppm must be in [0, {PPM}], got {self.reputation_decay_ppm}")
        if self.reward_budget < 0:
            raise RuleError(f"reward_budget must be >= 0, got {self.reward_budget}")

    @classmethod
    def version8(cls, **overrides: Any) -> RuleConfig:
        """Version 7 whose norm test allows each group its stake's multiple of the median stake in norm (open
        registries; needs Merkle settlement)."""
        return cls(**{"version": 8, **overrides})

    @classmethod
    def version7(cls, **overrides: Any) -> RuleConfig:
        """Version 6 whose reference median and typical norm count each group's stake as its votes (open registries;
        needs Merkle settlement)."""
        return cls(**{"version": 7, **overrides})

    @classmethod
    def version6(cls, **overrides: Any) -> RuleConfig:
        """Version 5 with rewards split by score times stake (open registries; needs Merkle settlement)."""
        return cls(**{"version": 6, **overrides})

    @classmethod
    def version4(cls, **overrides: Any) -> RuleConfig:
        """The rule committed by rounds of issue 13 before history third parties (no pair test in small rounds)."""
        return cls(**{"version": 4, **overrides})

    @classmethod
    def version3(cls, **overrides: Any) -> RuleConfig:
        """The rule committed by rounds of issue 13 before redundancy groups (perturbed copies paid separately)."""
        return cls(**{"version": 3, **overrides})

    @classmethod
    def version2(cls, **overrides: Any) -> RuleConfig:
        """The rule committed by rounds between the first revision and issue 13 (equal weights, median of all)."""
        return cls(**{"version": 2, **overrides})

    @property
    def weighted(self) -> bool:
        """Version 3's reputation gate and trust-weighted aggregate apply."""
        return self.version >= 3 and self.aggregator == "median-verified-mean"

    @property
    def groups_redundant(self) -> bool:
        """Version 4's redundancy groups apply (they extend the copy groups, so they need copy detection on)."""
        return self.weighted and self.version >= 4 and self.duplicate_tolerance is not None

    @property
    def stake_weighted(self) -> bool:
        """Version 6: rewards are split by weight times the stake each identity had when the round opened."""
        return self.version >= 6

    @property
    def stake_votes(self) -> bool:
        """Version 7: the reference median and the typical norm weigh each redundancy group by its stake at the
        open (version 6 and earlier: one vote per group)."""
        return self.version >= 7 and self.weighted

    @property
    def stake_allowance(self) -> bool:
        """Version 8: a group holding a times the median stake is allowed a times the typical norm."""
        return self.version >= 8 and self.weighted

    @property
    def history_rounds(self) -> int:
        """Version 5: how many previous rounds' accepted updates small rounds take as third parties (0: none)."""
        return self.redundancy_history_rounds if self.groups_redundant and self.version >= 5 else 0

    @classmethod
    def version1(cls, **overrides: Any) -> RuleConfig:
        """The rule as committed before the revision (rejects beyond max_norm_ratio, no copy detection)."""
        fields: dict[str, Any] = {"version": 1, "duplicate_tolerance": None, **overrides}
        fields.setdefault("reject_norm_ratio", fields.get("max_norm_ratio", cls.max_norm_ratio))
        return cls(**fields)

    @property
    def min_score_fixed(self) -> int:
        return round(self.min_score * SCORE_SCALE)

    def to_document(self) -> dict[str, Any]:
        doc = asdict(self)
        for name in self.foreign_fields(self.version):  # the documents of versions 1 to 4 stay what they were
            doc.pop(name)
        doc["reward_budget"] = str(self.reward_budget)  # JSON-safe big integer
        doc["formulas"] = f"trainer/rules.py docstring, fedledger rule v{self.version}"
        return doc

    @staticmethod
    def foreign_fields(version: int) -> frozenset[str]:
        """The parameters a document of ``version`` does not have (they came with later versions)."""
        later = {3: _V3_FIELDS, 4: _V4_FIELDS, 5: _V5_FIELDS}
        return frozenset().union(*(names for v, names in later.items() if version < v))

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
            version = doc.get("version", 1)
            foreign = cls.foreign_fields(version)
            if foreign & doc.keys():
                raise ValueError(f"version {version} has no {sorted(foreign & doc.keys())}")
            if doc.get("version", 1) == 1:  # before the revision: reject long updates, no copy detection
                doc.setdefault("reject_norm_ratio", doc.get("max_norm_ratio", cls.max_norm_ratio))
                doc.setdefault("duplicate_tolerance", None)
            return cls(**doc)
        except (ValueError, KeyError, TypeError) as exc:
            raise RuleError(f"not a rule document: {exc}") from exc
