"""Independent audit of finalized rounds, from the chain and the blob store alone.

For each round: the rule document matches its committed hash and the on-chain parameters; the base model is the
previous round's output; every committed blob is available and hashes to its commitment; the median reference and
scores recompute within the rule's tolerance; every decision follows the committed scores and the rule; the
aggregate recomputes bit for bit to the committed model hash; rewards and reputation follow the contract formulas
and match what was minted.

Rounds finalized with a results root (docs/merkle-rounds.md) are checked the same way over their public lists, plus:
every relayer batch's signed list hashes to what was posted, rebuilds the posted root, and every signature in it
recovers to its participant ("batches"); the result list hashes to what was committed, rebuilds the results root,
has the committed size and accepted count, covers exactly the round's committers, and its rewards sum to the
committed total within the budget ("results");
reputation follows from the state the earlier rounds proved; every claim matches its leaf ("claims").

Stake ("slashes"): the round's StakeSlashed events are exactly one per committed verdict whose status is slashable
(trainer/incentives.py SLASHABLE), with that status, each burning ``slashed(stake before, status, slashPpm)`` of the
registry's own slashPpm; nobody else was slashed for the round. For a Merkle round a missing slash means nobody sent
the proof (the aggregator does, right after committing); it fails the check too, unless the result list fails its
own check (then its leaves cannot be proven).

Differential privacy ("privacy", deployments with a PrivacyLedger): every PrivacySpent record of the round names
the update its participant committed (same content hash); the blob declares a DP mechanism in its header and that
mechanism recomputes the recorded epsilon with Opacus's RDP accountant within ±(1 + 1e-6 * eps) micro-units
(trainer/privacy.py) and the recorded delta exactly; the running totals equal the sums of the participant's
records so far; no total exceeds the budget in force (re-derived from the budget events); a blob that declares a
mechanism has a record, and a participant with earlier records does not commit around the ledger. The report
holds each participant's ledger, with the tighter RDP-composed epsilon of its committed mechanisms beside the sum.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from chain.deploy import Deployment
from chain.lists import ListFormatError, ResultList
from fedledger.history import ChainHistory, RoundRecord, ScoredUpdate
from fedledger.roles import fetch_params, gather_submissions, previous_base, shapes_of
from fedledger.settlement import (
    HistoryUnavailable, ReputationLedger, committed_set, evaluate_committed, header_of, history_rows, load_results,
    stakes_at_open,
)
from storage import BlobStore, StorageError
from trainer.aggregation import Verdict, evaluate_round, flatten, unflatten
from trainer.errors import RuleError, UpdateRejected
from trainer.incentives import (
    INITIAL_REPUTATION,
    SLASHABLE,
    next_reputation,
    reward_split,
    slashed,
    stake_weights,
    weight,
)
from trainer.rules import RuleConfig, Status
from trainer.privacy import DELTA_ONE, EPSILON_ONE, Mechanism, PrivacyError, rdp_composed_epsilon, within_tolerance
from trainer.serialization import content_hash, read_metadata, serialize

UNLIMITED = 2**64 - 1  # PrivacyLedger.UNLIMITED: no budget

# The status codes the rule defines. finalizeRound refuses any other; a result list's statuses never reach the chain.
_STATUS_CODES = frozenset(int(s) for s in Status)


def _status_name(code: int) -> str:
    return Status(code).name if code in _STATUS_CODES else f"status {code}"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class RoundAudit:
    round_id: int
    checks: list[Check] = field(default_factory=list)
    # the rule's verdicts as the audit re-derived them, with their reasons (copies and redundancy groups name whom
    # they share a score with); empty when the audit stopped before the rule ran
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def add(self, name: str, problems: list[str], ok_detail: str = "") -> bool:
        self.checks.append(Check(name, not problems, "; ".join(problems) if problems else ok_detail))
        return not problems


@dataclass
class AuditReport:
    rounds: list[RoundAudit]
    privacy: dict[str, dict] = field(default_factory=dict)  # participant -> its ledger as the audit re-derived it

    @property
    def verified(self) -> bool:
        return bool(self.rounds) and all(r.ok for r in self.rounds)

    def failure_lines(self) -> list[str]:
        return [f"round {r.round_id}: {c.name}: {c.detail}" for r in self.rounds for c in r.failures()]

    def to_json(self) -> dict:
        return {
            "verified": self.verified,
            "rounds": [
                {"round": r.round_id, "ok": r.ok, "checks": [c.__dict__ for c in r.checks],
                 "verdicts": [{"participant": v.participant, "status": v.status.name, "score": v.score,
                               "group_size": v.group_size, "detail": v.detail} for v in r.verdicts]}
                for r in self.rounds
            ],
            "privacy": self.privacy,
        }


class Auditor:
    """Needs the deployment (chain) and a blob store, nothing else: shapes come from the committed base model."""

    def __init__(self, deployment: Deployment, store: BlobStore, history: ChainHistory | None = None) -> None:
        """``history``: an event history of ``deployment`` to extend instead of reading every event again (the
        API keeps one); records are rebuilt from its events on every call, so nothing is stale."""
        self.history = history if history is not None else ChainHistory(deployment)
        self.store = store
        self.reputation = ReputationLedger(self.history, store)

    def verify(self, round_id: int | None = None) -> AuditReport:
        count = self.history.round_count()
        ids = [round_id] if round_id is not None else list(range(1, count + 1))
        audits = []
        for rid in ids:
            record = self.history.round(rid)
            if record.state != "finalized":
                continue
            expected_base = self.history.genesis_hash() if rid == 1 else self.history.d.rounds.get_round(rid - 1).new_model_hash
            audits.append(self.verify_round(record, expected_base))
        report = AuditReport(audits)
        if self.history.d.privacy is not None and audits:
            # every round up to the last one audited, in order: the running totals carry from the earlier ones
            privacy = PrivacyAudit(self.history, self.store)
            by_id = {a.round_id: a for a in audits}
            for rid in range(1, audits[-1].round_id + 1):
                privacy.check_round(by_id.get(rid, RoundAudit(rid)), self.history.round(rid))
            report.privacy = privacy.ledgers()
        return report

    def verify_round(self, rec: RoundRecord, expected_base: bytes) -> RoundAudit:
        audit = RoundAudit(rec.round_id)
        rule = self._check_rule(audit, rec)
        lineage = []
        if rec.base_model_hash != expected_base:
            source = "the genesis model" if rec.round_id == 1 else f"round {rec.round_id - 1}'s output"
            lineage.append(f"base model 0x{rec.base_model_hash.hex()} is not {source} 0x{expected_base.hex()}")
        audit.add("lineage", lineage)
        try:
            base = fetch_params(self.store, rec.base_model_cid, rec.base_model_hash)
        except (StorageError, UpdateRejected) as exc:
            audit.add("base", [f"base model unusable: {exc}"])
            return audit
        audit.add("base", [])

        results: ResultList | None = None
        if rec.results is not None:
            results = self._check_merkle_lists(audit, rec)
            if results is None:
                return audit
        committed = {s.participant: s for s in rec.scored}
        problems = []
        if sorted(committed) != sorted(c.participant for c in rec.commitments):
            problems.append("the scored set differs from the set of commitments")
        if rule is None:
            return audit
        try:
            previous = previous_base(self.store, self.history, rec.round_id)
        except (StorageError, UpdateRejected) as exc:
            audit.add("base", [f"previous base model (the public global step) unusable: {exc}"])
            return audit
        prior = None
        if rule.weighted:  # rule version 3 weighs updates by the reputation before the round
            try:
                prior = self.reputation.before(rec.round_id)
            except (StorageError, ListFormatError) as exc:  # an earlier round's result list, failed in its own audit
                audit.add("scores", [f"rule version {rule.version} weighs updates by the reputation before the "
                                     f"round, and the reputation earlier rounds proved is unusable: {exc}"])
                return audit
        past = history_rows(self.store, self.history, rec.round_id, shapes_of(base), rule)
        stakes = None
        if rule.stake_votes:  # rule versions 7 and 8: the median's votes (and from 8 the norm allowance) are the
            # stakes at the open block
            who = [c.participant for c in rec.commitments]
            stakes = dict(zip(who, stakes_at_open(self.history, rec, who), strict=True))
        try:
            if results is not None:  # streamed from files, as the aggregator ran it
                outcome, submissions = evaluate_committed(self.store, base, rec.commitments, rule, previous, prior,
                                                          past, stakes)
            else:
                submissions = gather_submissions(self.store, rec)  # type: ignore[assignment]
                outcome = evaluate_round(base, submissions, rule, previous, reputation=prior,  # type: ignore[arg-type]
                                         history=past, stakes=stakes)
        except HistoryUnavailable as exc:
            audit.add("scores", [str(exc)])
            return audit
        audit.verdicts = outcome.verdicts
        blob_problems = []
        for sub in submissions:
            status = committed.get(sub.participant)
            if sub.failure is not None and status is not None and status.status != int(sub.failure):
                if status.status != Status.UNAVAILABLE:
                    blob_problems.append(
                        f"{sub.participant}: {sub.failure.name.lower().replace('_', ' ')} "
                        f"(committed status {_status_name(status.status)}): {sub.detail}"
                    )
        audit.add("blobs", problems + blob_problems, f"{len(submissions)} blobs match their commitments")
        if blob_problems or problems:
            return audit

        shapes = shapes_of(base)
        recomputed = {v.participant: v for v in outcome.verdicts}
        score_problems = []
        decision_problems = []
        for p, s in committed.items():
            if s.status not in _STATUS_CODES:
                decision_problems.append(f"{p}: committed status {s.status}, which the rule does not define")
                continue
            v = recomputed[p]
            if Status(v.status).is_validity_failure:
                if s.status != int(v.status) and s.status != Status.UNAVAILABLE:
                    decision_problems.append(f"{p}: committed {Status(s.status).name}, blob is {v.status.name}")
                continue
            if Status(s.status).is_validity_failure:
                decision_problems.append(f"{p}: committed {Status(s.status).name} but its blob is valid")
            elif s.status != v.status:
                ratio = "" if v.norm_ratio is None else f" (norm ratio {v.norm_ratio:.3f}, cosine {v.cosine:.3f})"
                decision_problems.append(
                    f"{p}: committed {Status(s.status).name} with score {s.score}, rule says {v.status.name}{ratio}"
                    + (f": {v.detail}" if v.detail else "")
                )
            if abs(s.score - v.score) > rule.score_tolerance:
                score_problems.append(f"{p}: committed score {s.score}, recomputed {v.score}")
        valid = sum(1 for v in outcome.verdicts if not v.status.is_validity_failure)
        audit.add("scores", score_problems, f"{valid} scores within ±{rule.score_tolerance}e-6")
        audit.add("decisions", decision_problems)

        new_flat = flatten(outcome.new_params)
        new_hash = content_hash(serialize(unflatten(new_flat, shapes)))
        agg_problems = []
        if new_hash != rec.new_model_hash:
            agg_problems.append(
                f"recomputed global model 0x{new_hash.hex()} differs from committed 0x{rec.new_model_hash.hex()}"
            )
        try:
            self.store.get(rec.new_model_cid, rec.new_model_hash)
        except StorageError as exc:
            agg_problems.append(f"committed global model blob: {exc}")
        audit.add("aggregate", agg_problems, "bit-identical")

        if results is not None:
            self._check_merkle_incentives(audit, rec, results, rule)
        else:
            self._check_incentives(audit, rec, rule)
        self._check_slashes(audit, rec)
        return audit

    def _check_slashes(self, audit: RoundAudit, rec: RoundRecord) -> None:
        """One slash per slashable verdict, by the rule's amount; no other slash for the round."""
        ppm = self.history.d.registry.slash_ppm()
        verdicts = {s.participant: s.status for s in rec.scored}
        events = self.history.events("StakeSlashed", round_id=rec.round_id)
        problems = []
        seen: set[str] = set()
        for e in events:
            a = e.args
            if a.account in seen:
                problems.append(f"{a.account}: slashed twice for the round")
            seen.add(a.account)
            status = verdicts.get(a.account)
            if status is None:
                problems.append(f"{a.account}: slashed {a.amount} but has no verdict in the round")
            elif status != a.status or status not in SLASHABLE:
                problems.append(f"{a.account}: slashed as {_status_name(a.status)}, verdict {_status_name(status)}")
            if a.amount != slashed(a.stake_before, a.status, ppm):
                problems.append(f"{a.account}: slashed {a.amount} of {a.stake_before}, the rule gives "
                                f"{slashed(a.stake_before, a.status, ppm)} ({ppm} ppm)")
        missing = sorted(p for p, st in verdicts.items() if st in SLASHABLE and p not in seen)
        # A result list that fails its own check is not the one committed: its leaves cannot be proven, so nobody
        # could have slashed by them (the "results" failure says what is wrong).
        unprovable = any(c.name == "results" and not c.ok for c in audit.checks)
        if missing and not unprovable:
            problems.append(f"slashable verdicts never slashed: {missing[:5]}" + (" (+more)" if len(missing) > 5 else ""))
        burned = sum(e.args.amount for e in events)
        audit.add("slashes", problems, f"{len(events)} slashed, {burned} wei burned at {ppm} ppm")

    def _check_merkle_lists(self, audit: RoundAudit, rec: RoundRecord) -> ResultList | None:
        """The batches and the result list of a Merkle-finalized round; fills ``rec.commitments`` with the round's
        effective commitments and ``rec.scored`` with the list's entries. None when the list is unusable."""
        assert rec.results is not None
        cs = committed_set(self.history, self.store, rec)
        audit.add(
            "batches", cs.problems,
            f"{len(rec.batches)} batches, {cs.signatures_checked} signatures verified, {cs.batched} batched + "
            f"{len(cs.commitments) - cs.batched} direct commitments",
        )
        rec.commitments = cs.commitments
        try:
            results = load_results(self.store, rec)
        except (StorageError, ListFormatError) as exc:
            audit.add("results", [f"result list unusable: {exc}"])
            return None
        problems = []
        if (why := results.header.mismatch(header_of(self.history, rec.round_id))) is not None:
            problems.append(why)
        if results.root != rec.results.root:
            problems.append(f"the result list's root 0x{results.root.hex()} is not the committed 0x{rec.results.root.hex()}")
        if len(results.entries) != rec.results.entries:
            problems.append(f"the result list has {len(results.entries)} entries, {rec.results.entries} were committed")
        # finalizeRoundWithResults records the aggregator's accepted count as the round's; nothing on-chain checks it
        accepted = self.history.d.rounds.get_round(rec.round_id).accepted
        if results.accepted != accepted:
            problems.append(f"the result list has {results.accepted} accepted, {accepted} were committed")
        if results.total_reward != rec.results.total:
            problems.append(f"the result list's rewards sum to {results.total_reward}, the committed total is {rec.results.total}")
        if results.total_reward > rec.reward_budget:
            problems.append(f"the result list's rewards sum to {results.total_reward}, over the budget {rec.reward_budget}")
        if results.rule_hash != rec.rule_hash or results.new_model_hash != rec.new_model_hash:
            problems.append("the result list names another rule or global model than the round")
        listed = [e.participant for e in results.entries]
        if listed != [c.participant for c in cs.commitments]:
            missing = sorted({c.participant for c in cs.commitments} - set(listed))
            extra = sorted(set(listed) - {c.participant for c in cs.commitments})
            problems.append(f"the result list does not cover the committers: missing {missing[:5]}, not committers {extra[:5]}")
        audit.add("results", problems, f"{len(results.entries)} results under root 0x{results.root.hex()[:12]}")
        rec.scored = [ScoredUpdate(e.participant, e.status, e.score, e.reward, e.reputation) for e in results.entries]
        return results

    def _check_merkle_incentives(self, audit: RoundAudit, rec: RoundRecord, results: ResultList,
                                 rule: RuleConfig | None) -> None:
        """Rewards and reputation of the list by the contract's formulas from the proven earlier state (rule versions
        6 to 8: rewards by weight times the registry's stakes at the round's open block); claims."""
        entries = results.entries
        weights = [weight(e.status, e.score) for e in entries]
        by_stake = rule is not None and rule.stake_weighted
        if by_stake:
            stakes = stakes_at_open(self.history, rec, [e.participant for e in entries])
            expected = reward_split(rec.reward_budget, stake_weights(weights, stakes))
        else:
            expected = reward_split(rec.reward_budget, weights)
        problems = []
        try:
            prior = self.reputation.before(rec.round_id)
        except (StorageError, ListFormatError) as exc:  # an earlier round's result list, failed in its own audit
            problems.append(f"the reputation earlier rounds proved is unusable: {exc}")
            prior = None
        for e, w, r in zip(entries, weights, expected, strict=True):
            if e.reward != r:
                problems.append(f"{e.participant}: listed reward {e.reward}, rule gives {r}")
            if prior is None:
                continue
            rep = next_reputation(prior.get(e.participant, INITIAL_REPUTATION), w, rec.reputation_decay)
            if e.reputation != rep:
                problems.append(f"{e.participant}: listed reputation {e.reputation}, rule gives {rep}")
        basis = f"by score x stake at block {rec.opened_block}" if by_stake else "as the rule says"
        audit.add("rewards", problems, f"{sum(expected)} claimable {basis}")
        claim_problems = []
        by_participant = {e.participant: e for e in entries}
        for c in rec.claims:
            e = by_participant.get(c.participant)
            if e is None or (c.status, c.score, c.reward, c.reputation) != (e.status, e.score, e.reward, e.reputation):
                claim_problems.append(f"{c.participant}: claimed {c.reward} in {c.tx_hash}, not its listed result")
        claimed = sum(c.reward for c in rec.claims)
        if claimed > results.total_reward:
            claim_problems.append(f"claims total {claimed}, more than the listed {results.total_reward}")
        if claimed != rec.minted:
            claim_problems.append(f"claims total {claimed}, the round records {rec.minted} minted")
        audit.add("claims", claim_problems, f"{len(rec.claims)} claims, {claimed} minted")

    def _check_rule(self, audit: RoundAudit, rec: RoundRecord) -> RuleConfig | None:
        try:
            rule = RuleConfig.from_bytes(self.store.get(rec.rule_cid, rec.rule_hash))
        except (StorageError, RuleError) as exc:
            audit.add("rule", [f"rule document unusable: {exc}"])
            return None
        problems = []
        if rule.reward_budget != rec.reward_budget:
            problems.append(f"rule budget {rule.reward_budget} != on-chain {rec.reward_budget}")
        if rule.reputation_decay_ppm != rec.reputation_decay:
            problems.append(f"rule decay {rule.reputation_decay_ppm} != on-chain {rec.reputation_decay}")
        audit.add("rule", problems, rule.aggregator)
        return rule

    def _check_incentives(self, audit: RoundAudit, rec: RoundRecord, rule: RuleConfig | None) -> None:
        ordered = sorted(rec.scored, key=lambda s: s.participant.lower())
        weights = [weight(s.status, s.score) for s in ordered]
        expected = reward_split(rec.reward_budget, weights)
        problems = []
        if rule is not None and rule.stake_weighted:
            problems.append(f"rule version {rule.version} splits rewards by stake, but the round was finalized by "
                            "finalizeRound, which pays by score alone")
        for s, w, r in zip(ordered, weights, expected, strict=True):
            if s.reward != r:
                problems.append(f"{s.participant}: rewarded {s.reward}, rule gives {r}")
            minted = self.history.minted_to(s.participant, block=rec.finalized_block)
            if minted != r:
                problems.append(f"{s.participant}: minted {minted}, rule gives {r}")
            before = rec.reputation_before.get(s.participant, INITIAL_REPUTATION)
            if s.reputation != next_reputation(before, w, rec.reputation_decay):
                problems.append(f"{s.participant}: reputation {s.reputation}, rule gives {next_reputation(before, w, rec.reputation_decay)}")
        if sum(expected) != rec.minted:
            problems.append(f"round minted {rec.minted}, rule gives {sum(expected)}")
        audit.add("rewards", problems, f"{sum(expected)} minted as the rule says")


class PrivacyAudit:
    """The privacy ledger's checks, round by round, in chain order (running totals carry across rounds)."""

    def __init__(self, history: ChainHistory, store: BlobStore) -> None:
        self.history = history
        self.store = store
        self.spent: dict[str, tuple[int, int]] = {}  # participant -> (epsilon, delta) summed over checked records
        self.mechanisms: dict[str, list[Mechanism]] = {}
        self.entries: dict[str, list[dict]] = {}
        self.first_round: dict[str, int] = {}
        # Budget events in chain order: the budget in force at any point is re-derived from them.
        self.budget_events = [(e.block_number, e.log_index, e) for e in self.history.events("DefaultBudgetSet")]
        self.budget_events += [(e.block_number, e.log_index, e) for e in self.history.events("ParticipantBudgetSet")]
        self.budget_events.sort(key=lambda t: (t[0], t[1]))

    def budget_at(self, participant: str, block: int, log_index: int) -> int:
        default, own = UNLIMITED, None
        for b, i, e in self.budget_events:
            if (b, i) >= (block, log_index):
                break
            if e.name == "DefaultBudgetSet":
                default = e.args.budget
            elif e.args.participant == participant:
                own = e.args.budget if e.args.set else None
        return default if own is None else own

    def check_round(self, audit: RoundAudit, rec: RoundRecord) -> None:
        records = self.history.events("PrivacySpent", round_id=rec.round_id)
        committed = {c.participant: c for c in rec.commitments}
        problems: list[str] = []
        recorded = set()
        for ev in records:
            a = ev.args
            p = a.participant
            recorded.add(p)
            where = f"{p} (round {rec.round_id})"
            c = committed.get(p)
            if c is None or c.content_hash != a.content_hash:
                got = "nothing" if c is None else f"0x{c.content_hash.hex()}"
                problems.append(f"{where}: privacy record for update 0x{a.content_hash.hex()}, committed {got}")
                continue
            try:
                mech = Mechanism.from_metadata(read_metadata(self.store.get(c.cid, c.content_hash)))
            except (StorageError, UpdateRejected, PrivacyError) as exc:
                problems.append(f"{where}: the committed blob's DP mechanism is unusable: {exc}")
                continue
            if mech is None:
                problems.append(f"{where}: records epsilon {a.epsilon / EPSILON_ONE:.6f} but its blob declares no DP mechanism")
                continue
            ok, eps = within_tolerance(a.epsilon, mech)
            if not ok:
                word = "understates" if a.epsilon < eps * EPSILON_ONE else "overstates"
                problems.append(
                    f"{where}: recorded epsilon {a.epsilon / EPSILON_ONE:.6f} {word} its mechanism's {eps:.6f} "
                    f"(noise {mech.noise_multiplier:.6g}, sample rate {mech.sample_rate:.6g}, {mech.steps} steps, "
                    f"delta {mech.delta:g}, Opacus RDP)"
                )
            if a.delta != mech.delta_atto:
                problems.append(f"{where}: recorded delta {a.delta}e-18, its mechanism declares {mech.delta_atto}e-18")
            spent_eps, spent_delta = self.spent.get(p, (0, 0))
            if (a.total_epsilon, a.total_delta) != (spent_eps + a.epsilon, spent_delta + a.delta):
                problems.append(
                    f"{where}: running totals ({a.total_epsilon}, {a.total_delta}) are not the sums of its records "
                    f"({spent_eps + a.epsilon}, {spent_delta + a.delta})"
                )
            budget = self.budget_at(p, ev.block_number, ev.log_index)
            if a.budget != budget:
                problems.append(f"{where}: record names budget {a.budget}, the budget in force was {budget}")
            if spent_eps + a.epsilon > budget:
                problems.append(
                    f"{where}: epsilon total {(spent_eps + a.epsilon) / EPSILON_ONE:.6f} exceeds the budget "
                    f"{budget / EPSILON_ONE:.6f}"
                )
            self.spent[p] = (spent_eps + a.epsilon, spent_delta + a.delta)
            self.mechanisms.setdefault(p, []).append(mech)
            self.first_round.setdefault(p, rec.round_id)
            self.entries.setdefault(p, []).append({
                "round": rec.round_id, "epsilon": a.epsilon / EPSILON_ONE, "recomputed_epsilon": eps,
                "delta": a.delta / DELTA_ONE, "total_epsilon": self.spent[p][0] / EPSILON_ONE,
                "total_delta": self.spent[p][1] / DELTA_ONE,
                "budget": None if budget == UNLIMITED else budget / EPSILON_ONE,
                "noise_multiplier": mech.noise_multiplier, "sample_rate": mech.sample_rate, "steps": mech.steps,
                "max_grad_norm": mech.max_grad_norm,
            })
        for p, c in committed.items():
            if p in recorded:
                continue
            if p in self.first_round:
                problems.append(f"{p} (round {rec.round_id}): committed around the privacy ledger after its records "
                                f"from round {self.first_round[p]} on")
                continue
            try:
                mech = Mechanism.from_metadata(read_metadata(self.store.get(c.cid, c.content_hash)))
            except (StorageError, UpdateRejected, PrivacyError):
                continue  # an unusable blob is the "blobs" check's finding; no privacy claim to check
            if mech is not None:
                problems.append(f"{p} (round {rec.round_id}): its blob declares a DP mechanism (epsilon "
                                f"{mech.epsilon:.6f}) but no spend is recorded on the privacy ledger")
        audit.add("privacy", problems, f"{len(records)} records recompute (Opacus RDP) and sum within budget")

    def ledgers(self) -> dict[str, dict]:
        out = {}
        for p, entries in self.entries.items():
            eps, delta = self.spent[p]
            out[p] = {
                "rounds": entries, "epsilon_basic": eps / EPSILON_ONE, "delta_basic": delta / DELTA_ONE,
                "epsilon_rdp": rdp_composed_epsilon(self.mechanisms[p], delta / DELTA_ONE),
                "budget": entries[-1]["budget"],
            }
        return out


def print_audit(console: Console, report: AuditReport) -> None:
    """One row per round, one column per check; then every failure as 'round N: check: reason'."""
    table = Table(title="audit (chain + blob store only)", title_justify="left")
    table.add_column("round", justify="right")
    names = [c.name for c in report.rounds[0].checks] if report.rounds else []
    for n in names:
        table.add_column(n, min_width=len(n), no_wrap=True)
    for r in report.rounds:
        cells = {c.name: "[green]ok[/]" if c.ok else "[red]FAIL[/]" for c in r.checks}
        table.add_row(str(r.round_id), *(cells.get(n, "[yellow]skipped[/]") for n in names))
    console.print(table)
    if not report.rounds:
        console.print("[red]audit failure[/] no finalized round to audit")
    if report.privacy:
        t = Table(title="privacy ledger (epsilon per participant; basic = on-chain sums, rdp = composed)",
                  title_justify="left")
        for col in ("participant", "rounds", "epsilon per round", "epsilon basic", "epsilon rdp", "delta basic",
                    "budget"):
            t.add_column(col)
        for p, led in sorted(report.privacy.items()):
            per = ", ".join(f"r{e['round']}:{e['epsilon']:.3f}" for e in led["rounds"])
            t.add_row(p, str(len(led["rounds"])), per, f"{led['epsilon_basic']:.4f}", f"{led['epsilon_rdp']:.4f}",
                      f"{led['delta_basic']:.2e}", "none" if led["budget"] is None else f"{led['budget']:.4f}")
        console.print(t)
    for line in report.failure_lines():
        console.print(f"[red]audit failure[/] {line}")
    console.print("[green]audit verified[/]" if report.verified else "[red]audit FAILED[/]")


def verify_command(auditor: Auditor, console: Console, *, round_id: int | None = None, json_out: Path | None = None) -> int:
    """What ``fedledger audit verify`` does once connected: verify, print, optionally write JSON; exit code."""
    report = auditor.verify(round_id)
    print_audit(console, report)
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 0 if report.verified else 1
