"""``fedledger bench gas``: gas per operation, per round and per participant on a real Hardhat node.

    fedledger bench gas [--participants 10 100 1000] [--json docs/gas-bench.json]

Starts a throw-away Hardhat node on a free loopback port, deploys, registers the participants, and measures
receipts' gasUsed. For each participant count N it plays one round per settlement path:

* ``legacy`` (only N <= 100): every participant commits by its own transaction (one of them by an EIP-712 signature
  the operator relays), then ``finalizeRound`` writes every participant's reputation and mints every reward. That
  is linear in N (~450 participants fill the per-transaction gas cap), hence the limit.
* ``direct_merkle``: the same commitments, then one ``finalizeRoundWithResults`` (a results root; claims by proof).
* ``batched``: every participant signs its commitment (EIP-712, no ether needed) and the relay (the operator holds
  RELAYER_ROLE) posts them in batches of ``--batch-size`` with ``commitBatch``, then one
  ``finalizeRoundWithResults``; ``batched_one_batch`` is the same with all N in one batch, when N is larger.

A round's total is open + commits (for ``batched``: the relay's batch transactions) + close + finalize; per
participant is total // N. Claims are measured separately, from result trees of the largest N: one participant
claiming 1 round (its first claim: a mint to a new holder and a registry reputation write), 2 and 4 rounds in one
transaction, and a repeat claim of 1 round by a participant who already holds tokens.

Scores and update blobs are synthetic (gas does not depend on what the model learned), the lists are real: batches
and result lists are the canonical ``chain.lists`` documents, rooted with ``chain.merkle``, stored, re-read by the
auditor's ``committed_set`` (every signature checked), and every claim is verified on chain and against the
claimer's token balance. Lists are stored in memory under CIDv1 names, the length Kubo gives, so their calldata
is that of the devnet stack.
"""

from __future__ import annotations

import base64
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_utils import keccak
from rich.console import Console
from rich.table import Table
from web3 import Web3
from web3.types import RPCEndpoint

from chain.accounts import DEVNET_FUNDING_WEI, devnet_wallets, fund_from_node
from chain.deploy import Deployment, deploy_all
from chain.lists import ListHeader, ResultEntry, ResultList, SignedCommitment
from chain.transactor import Transactor, TxResult
from fedledger.devnet import Devnet, DevnetConfig, free_port
from fedledger.history import ChainHistory
from fedledger.roles import Operator, claims_for, sign_commitment, sign_registration
from fedledger.settlement import committed_set
from fedledger.wiring import connect_rpc, default_stake_params
from storage import BlobNotFound, BlobRef
from storage.base import check_integrity, sha256
from trainer.incentives import INITIAL_REPUTATION, next_reputation, reward_split, weight
from trainer.rules import RuleConfig, Status

CID_EXAMPLE = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"  # a CIDv1 raw: realistic length
LEGACY_MAX_PARTICIPANTS = 100  # finalizeRound is linear: 100 use 3.6M of the 16.7M per-transaction cap
DEFAULT_BATCH_SIZE = 500
CLAIM_ROUND_COUNTS = (1, 2, 4)
SEED = 7


class BenchCheckError(RuntimeError):
    """What the bench built did not hold on chain (a root, a proof, a claim): its figures would mean nothing."""


class MemoryCidStore:
    """Blobs in memory, named by their CIDv1 raw (sha2-256) as Kubo names a one-chunk blob. Larger blobs get a
    dag-pb CID on Kubo, of the same length, so the CIDs posted on chain cost what they cost on the devnet stack."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    @property
    def location(self) -> str:
        return "memory"

    def put(self, data: bytes) -> BlobRef:
        digest = sha256(data)
        cid = "b" + base64.b32encode(bytes([0x01, 0x55, 0x12, 0x20]) + digest).decode().lower().rstrip("=")
        self._blobs[cid] = data
        return BlobRef(content_hash=digest, uri=cid)

    def get(self, uri: str, expected_hash: bytes) -> bytes:
        try:
            data = self._blobs[uri]
        except KeyError:
            raise BlobNotFound(uri) from None
        return check_integrity(uri, data, expected_hash)


def _ref(label: str) -> BlobRef:
    return BlobRef(content_hash=keccak(text=label), uri=CID_EXAMPLE)


def _verdicts(n: int) -> tuple[list[int], list[int]]:
    """Synthetic scores (1e-6 units) and statuses of n sorted participants: one in ten rejected."""
    scores = [400_000 + (i * 7919) % 500_000 for i in range(n)]
    statuses = [int(Status.ACCEPTED) if i % 10 else int(Status.LOW_SCORE) for i in range(n)]
    return scores, statuses


def _fund(w3: Web3, addresses: Sequence[str]) -> None:
    """Devnet ether: Hardhat's ``hardhat_setBalance`` (one call each, no transaction), else transfers from the node."""
    for i, a in enumerate(addresses):
        response = w3.provider.make_request(RPCEndpoint("hardhat_setBalance"), [a, hex(DEVNET_FUNDING_WEI)])
        if "error" in response:
            fund_from_node(w3, list(addresses[i:]))
            return


def _per(total: int, n: int) -> int:
    return total // n


@dataclass
class _Bench:
    tx: Transactor
    d: Deployment
    store: MemoryCidStore
    operator: Operator
    aggregator: str
    people: list[str]  # ascending address
    rule: RuleConfig = field(default_factory=RuleConfig)
    ops: dict[str, list[int]] = field(default_factory=dict)
    reputation: dict[str, int] = field(default_factory=dict)  # after the newest round, mirroring the contract
    legacy_members: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.history = ChainHistory(self.d)

    def op(self, name: str, result: TxResult) -> int:
        self.ops.setdefault(name, []).append(result.gas_used)
        return result.gas_used

    # ------------------------------------------------------------------------------------------------ pieces

    def open(self) -> tuple[int, int]:
        round_id, result = self.operator.open_round(self.rule)
        return round_id, self.op("open_round", result)

    def close(self, round_id: int) -> int:
        return self.op("close_round", self.operator.close_round(round_id))

    def commit_each(self, round_id: int, members: Sequence[str]) -> int:
        """Every member commits by its own transaction, except the first, whose signed commitment is relayed.
        Members an earlier legacy round slashed below the minimum stake top it up first (not counted here)."""
        minimum = self.d.registry.min_stake()
        for p in members:
            short = minimum - self.d.registry.stake_of(p).amount
            if short > 0:
                self.d.registry.deposit_stake(p, sender=p, value=short)
        total = 0
        for i, p in enumerate(members):
            ref = _ref(f"{round_id}/{p}")
            if i == 0:
                sig = sign_commitment(self.tx.account(p), self.tx.chain_id, self.d.rounds.address, round_id, ref)
                total += self.op("commit_signed_relayed", self.operator.relay(p, round_id, ref, sig))
            else:
                total += self.op("commit_direct", self.d.rounds.commit_update(round_id, ref.content_hash, ref.uri,
                                                                              sender=p))
        return total

    def results(self, round_id: int, members: Sequence[str]) -> ResultList:
        """The round's result list from synthetic verdicts, with the contract's reward split and reputation EMA."""
        scores, statuses = _verdicts(len(members))
        weights = [weight(s, sc) for s, sc in zip(statuses, scores, strict=True)]
        rewards = reward_split(self.rule.reward_budget, weights)
        entries = []
        for p, st, sc, w, r in zip(members, statuses, scores, weights, rewards, strict=True):
            rep = next_reputation(self.reputation.get(p, INITIAL_REPUTATION), w, self.rule.reputation_decay_ppm)
            entries.append(ResultEntry(p, st, sc, r, rep))
        header = ListHeader(self.tx.chain_id, self.d.rounds.address, round_id)
        return ResultList.build(header, self.rule.rule_hash(), keccak(text=f"model/{round_id}"), entries)

    def finalize_with_results(self, round_id: int, results: ResultList) -> int:
        list_ref = self.store.put(results.canonical_bytes())
        result = self.d.rounds.finalize_round_with_results(
            round_id, results.new_model_hash, CID_EXAMPLE, results.root, list_ref.content_hash, list_ref.uri,
            len(results.entries), results.accepted, results.total_reward, sender=self.aggregator,
        )
        committed = self.d.rounds.results_of(round_id)
        if committed.root != results.root or committed.total != results.total_reward:
            raise BenchCheckError(f"round {round_id}: results root/total on chain differ from the list's")
        self.reputation.update({e.participant: e.reputation for e in results.entries})
        return self.op(f"finalize_round_with_results_{len(results.entries)}", result)

    @staticmethod
    def summary(n: int, round_id: int, open_gas: int, commits: int, close: int, fin: int) -> dict[str, Any]:
        total = open_gas + commits + close + fin
        return {
            "participants": n,
            "round": round_id,
            "open": open_gas,
            "commits": commits,
            "close": close,
            "finalize": fin,
            "finalize_per_participant": _per(fin, n),
            "total": total,
            "total_per_participant": _per(total, n),
        }

    # ------------------------------------------------------------------------------------------------ paths

    def legacy(self, n: int) -> dict[str, Any]:
        members = self.people[:n]
        round_id, open_gas = self.open()
        commits = self.commit_each(round_id, members)
        close = self.close(round_id)
        scores, statuses = _verdicts(n)
        # A mint to an account without tokens writes a fresh balance slot (~17k more than topping one up), so the
        # legacy finalize depends on how many members earlier legacy rounds already paid.
        new_holders = sum(1 for p, st in zip(members, statuses, strict=True)
                          if st == Status.ACCEPTED and self.d.token.balance_of(p) == 0)
        fin = self.op(f"finalize_round_{n}", self.d.rounds.finalize_round(
            round_id, keccak(text=f"model/{round_id}"), CID_EXAMPLE, members, scores, statuses,
            sender=self.aggregator,
        ))
        for p, st, sc in zip(members, statuses, scores, strict=True):
            self.reputation[p] = next_reputation(self.reputation.get(p, INITIAL_REPUTATION), weight(st, sc),
                                                 self.rule.reputation_decay_ppm)
        self.legacy_members.update(members)
        return self.summary(n, round_id, open_gas, commits, close, fin) | {"new_holders": new_holders}

    def direct_merkle(self, n: int) -> dict[str, Any]:
        members = self.people[:n]
        round_id, open_gas = self.open()
        commits = self.commit_each(round_id, members)
        close = self.close(round_id)
        results = self.results(round_id, members)
        fin = self.finalize_with_results(round_id, results)
        out = self.summary(n, round_id, open_gas, commits, close, fin)
        out |= {"commits_own_tx": n - 1, "commits_signed_relayed": 1, "results_entries": len(results.entries),
                "rewards_total": results.total_reward}
        return out

    def batched(self, n: int, batch_size: int) -> dict[str, Any]:
        members = self.people[:n]
        round_id, open_gas = self.open()
        rounds = self.d.rounds
        signed = []
        for p in members:
            ref = _ref(f"{round_id}/{p}")
            sig = sign_commitment(self.tx.account(p), self.tx.chain_id, rounds.address, round_id, ref)
            signed.append(SignedCommitment(p, ref.content_hash, ref.uri, sig))
        batch_gas = []
        for index, start in enumerate(range(0, n, batch_size)):
            batch, _, result = self.operator.post_batch(round_id, signed[start:start + batch_size])
            batch_gas.append(self.op("commit_batch", result))
            first = batch.entries[0]
            if rounds.batch_root(round_id, index) != batch.root or not rounds.is_in_batch(
                round_id, index, first.participant, first.content_hash, first.cid, batch.proof(first.participant)
            ):
                raise BenchCheckError(f"round {round_id} batch {index}: root or inclusion proof not as posted")
        close = self.close(round_id)
        seen = committed_set(self.history, self.store, self.history.round(round_id))
        if len(seen.commitments) != n or seen.problems or seen.signatures_checked != n:
            raise BenchCheckError(f"round {round_id}: the auditor sees {len(seen.commitments)} of {n} batched "
                                  f"commitments: {seen.problems[:3]}")
        results = self.results(round_id, members)
        fin = self.finalize_with_results(round_id, results)
        out = self.summary(n, round_id, open_gas, sum(batch_gas), close, fin)
        out |= {"batch_size": min(batch_size, n), "batches": len(batch_gas), "commit_batch_gas": batch_gas,
                "signatures_checked": seen.signatures_checked, "results_entries": len(results.entries),
                "rewards_total": results.total_reward}
        return out

    # ------------------------------------------------------------------------------------------------ claims

    def claim(self, participant: str, round_ids: Sequence[int], *, label: str) -> dict[str, Any]:
        claims = claims_for(self.history, self.store, participant, round_ids)
        if [c.round_id for c in claims] != list(round_ids):
            raise BenchCheckError(f"{participant} has no unclaimed results in all of rounds {list(round_ids)}")
        before = self.d.token.balance_of(participant)
        first = before == 0
        first_of_round = [self.d.rounds.results_of(r).claimed == 0 for r in round_ids]
        result = self.d.rounds.claim(participant, claims, sender=participant)
        gained = self.d.token.balance_of(participant) - before
        expected = sum(c.reward for c in claims)
        newest = max(claims, key=lambda c: c.round_id)
        verified = (
            gained == expected
            and all(self.d.rounds.is_claimed(r, participant) for r in round_ids)
            and self.d.registry.reputation_of(participant) == newest.reputation
        )
        if not verified:
            raise BenchCheckError(f"claim by {participant} of rounds {list(round_ids)}: minted {gained}, "
                                  f"expected {expected}")
        self.op(label, result)
        return {
            "rounds_claimed": len(claims),
            "round_ids": list(round_ids),
            "first_claim": first,  # of this participant: a mint to a new holder
            "first_of_round": first_of_round,  # nobody had claimed from the round before
            "proof_nodes": [len(c.proof) for c in claims],
            "gas": result.gas_used,
            "gas_per_round": result.gas_used // len(claims),
            "reward": expected,
            "minted": gained,
            "verified": verified,
        }


def _register(bench: _Bench, on_stage: Callable[[str], None]) -> None:
    """Participants register themselves (they are funded: they commit by own transaction on the direct paths);
    one more account is registered by an EIP-712 signature the operator relays, to measure that path."""
    d, tx = bench.d, bench.tx
    for i, p in enumerate(bench.people):
        if i % 100 == 0:
            on_stage(f"registering participants ({i}/{len(bench.people)})")
        bench.op("register", d.registry.register(sender=p, value=d.registry.min_stake()))
    (extra,) = devnet_wallets(tx, SEED, ["participant/relayed-registration"], fund=False).values()
    deadline = int(tx.w3.eth.get_block("latest")["timestamp"]) + 3600
    sig = sign_registration(tx.account(extra), tx.chain_id, d.registry.address, deadline)
    bench.op("register_for_relayed", d.registry.register_for(extra, deadline, sig, sender=bench.operator.address,
                                                             value=d.registry.min_stake()))


def measure(
    participant_counts: list[int],
    *,
    work_dir: Path,
    batch_size: int = DEFAULT_BATCH_SIZE,
    legacy_max: int = LEGACY_MAX_PARTICIPANTS,
    rpc_url: str | None = None,
    on_stage: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Measure on the node at ``rpc_url`` (fresh contracts are deployed), or on a throw-away Hardhat node."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    counts = sorted(set(participant_counts))
    if not counts or counts[0] < 1:
        raise ValueError(f"participant counts must be >= 1, got {participant_counts}")
    started = time.perf_counter()
    stage_seconds: list[dict[str, Any]] = []

    def stage(name: str) -> None:
        now = time.perf_counter()
        if stage_seconds:
            stage_seconds[-1]["seconds"] = round(now - stage_seconds[-1].pop("_t"), 1)
        stage_seconds.append({"stage": name, "_t": now})
        on_stage(name)

    node = None
    if rpc_url is None:
        cfg = DevnetConfig(dir=work_dir / "devnet", rpc_port=free_port())
        node = Devnet(cfg)
    try:
        if node is not None:
            stage("starting a throw-away Hardhat node")
            node.start_hardhat()
            rpc_url = node.cfg.rpc_url
        stage("deploying")
        tx = connect_rpc(rpc_url)
        most = counts[-1]
        wallets = devnet_wallets(tx, SEED, ["admin", "operator", "aggregator"])
        d = deploy_all(tx, admin=wallets["admin"], operator=wallets["operator"], aggregator=wallets["aggregator"],
                       stake=default_stake_params())
        store = MemoryCidStore()
        people_by_label = devnet_wallets(tx, SEED, [f"participant/{i}" for i in range(most)], fund=False)
        people = sorted(people_by_label.values(), key=str.lower)  # numeric order, as the contract sorts
        stage(f"funding {most} participants")
        _fund(tx.w3, people)
        bench = _Bench(tx, d, store, Operator(d, store, wallets["operator"]), wallets["aggregator"], people)
        stage(f"registering {most} participants")
        _register(bench, on_stage)
        bench.op("publish_genesis", d.rounds.publish_genesis(keccak(text="genesis"), CID_EXAMPLE,
                                                             sender=wallets["operator"]))

        rounds: dict[str, dict[str, int]] = {}
        paths: dict[str, dict[str, Any]] = {}
        for n in counts:
            p: dict[str, Any] = {"legacy": None}
            if n <= legacy_max:
                stage(f"{n} participants: legacy round (own commits + finalizeRound)")
                p["legacy"] = bench.legacy(n)
                rounds[str(n)] = {k: v for k, v in p["legacy"].items() if k != "round"}
            stage(f"{n} participants: direct commits + finalizeRoundWithResults")
            p["direct_merkle"] = bench.direct_merkle(n)
            stage(f"{n} participants: signed commitments in batches of {batch_size} + finalizeRoundWithResults")
            p["batched"] = bench.batched(n, batch_size)
            if n > batch_size:
                stage(f"{n} participants: all signed commitments in one batch")
                p["batched_one_batch"] = bench.batched(n, n)
            paths[str(n)] = p

        # Claims from result trees of the largest N: enough Merkle rounds of it for the largest claim.
        merkle_rounds = [v["round"] for k, v in paths[str(most)].items() if k != "legacy" and v is not None]
        extra_rounds = []
        while len(merkle_rounds) < max(CLAIM_ROUND_COUNTS):
            stage(f"{most} participants: one more batched round to claim from")
            extra = bench.batched(most, batch_size)
            extra_rounds.append(extra)
            merkle_rounds.append(extra["round"])
        stage("claims by proof")
        claims = _claims(bench, most, sorted(merkle_rounds))

        stage("done")
        stage_seconds.pop()
        # A standalone mint to a new holder, as the finalize loop does once per rewarded participant.
        d.token.grant_role(d.token.minter_role(), wallets["admin"], sender=wallets["admin"])
        bench.op("mint_new_holder", d.token.mint("0x000000000000000000000000000000000000bEEF", 1,
                                                 sender=wallets["admin"]))
        return {
            "node": "hardhat",
            "solc": d.manifest.compiler["version"],
            "operations": {k: {"median": int(statistics.median(v)), "samples": len(v)} for k, v in bench.ops.items()},
            "rounds": rounds,
            "paths": paths,
            "claims": claims,
            "extra_claim_rounds": extra_rounds,
            "settings": {
                "participants": counts,
                "batch_size": batch_size,
                "legacy_max_participants": legacy_max,
                "list_cid_length": len(CID_EXAMPLE),
            },
            "wall_seconds": round(time.perf_counter() - started, 1),
            "stage_seconds": stage_seconds,
        }
    finally:
        if node is not None:
            node.down()


def _claims(bench: _Bench, n: int, merkle_rounds: list[int]) -> dict[str, Any]:
    """Claims from the N-sized result trees of the newest Merkle rounds.

    The first claim of a round also turns that round's claimed and minted counters from zero to non-zero (a one-time
    cost per round, whoever claims first), so one participant claims every round first and is reported apart. Then
    participants never paid before claim 1, 2 and 4 rounds in one transaction each (a first claim: a mint to a new
    holder, the first claimed-bits word and a registry reputation write), and the 1-round claimer claims again
    (the steady state of a participant who claims every round)."""
    rounds = merkle_rounds[-max(CLAIM_ROUND_COUNTS):]
    _, statuses = _verdicts(n)
    members = bench.people[:n]
    accepted = [p for p, s in zip(members, statuses, strict=True) if s == Status.ACCEPTED]
    fresh = [p for p in accepted if p not in bench.legacy_members]
    claimers = (fresh + [p for p in accepted if p in bench.legacy_members])[: len(CLAIM_ROUND_COUNTS) + 1]
    if len(claimers) < len(CLAIM_ROUND_COUNTS) + 1:
        raise ValueError(f"{n} participants are too few to measure {len(CLAIM_ROUND_COUNTS) + 1} claimers")
    first, *others = claimers
    out: dict[str, Any] = {"tree_entries": n, "rounds": rounds}
    out["first_claimer_of_each_round"] = bench.claim(
        first, rounds, label=f"claim_{len(rounds)}_rounds_first_of_round"
    )
    for claimer, k in zip(others, CLAIM_ROUND_COUNTS, strict=True):
        # the 1-round claimer takes the second newest, so its repeat claim (the newest) also writes reputation
        ids = rounds[-2:-1] if k == 1 else rounds[:k]
        out[f"{k}_round" + ("s" if k > 1 else "")] = bench.claim(claimer, ids, label=f"claim_{k}_rounds")
    out["1_round_repeat"] = bench.claim(others[0], rounds[-1:], label="claim_1_rounds_repeat")
    return out


# -------------------------------------------------------------------------------------------------- report

PATHS = (("legacy", "legacy"), ("direct_merkle", "direct + Merkle"), ("batched", "batched"),
         ("batched_one_batch", "batched, 1 batch"))


def print_report(console: Console, report: dict[str, Any]) -> None:
    ops = Table(title=f"gas per operation (Hardhat, solc {report['solc']})", title_justify="left")
    ops.add_column("operation")
    ops.add_column("gas (median)", justify="right")
    ops.add_column("samples", justify="right")
    for name, v in report["operations"].items():
        ops.add_row(name, f"{v['median']:,}", str(v["samples"]))
    console.print(ops)

    if report["rounds"]:
        rounds = Table(title="gas per round, legacy path (every participant written by finalizeRound)",
                       title_justify="left")
        for col in ("participants", "open", "commits", "close", "finalize", "finalize / participant", "total",
                    "total / participant", "new holders"):
            rounds.add_column(col, justify="right")
        for r in report["rounds"].values():
            rounds.add_row(*(f"{r[k]:,}" for k in ("participants", "open", "commits", "close", "finalize",
                                                    "finalize_per_participant", "total", "total_per_participant",
                                                    "new_holders")))
        console.print(rounds)

    legacy_max = report["settings"]["legacy_max_participants"]
    t = Table(title="gas per round by settlement path", title_justify="left",
              caption=f"legacy: own commits + finalizeRound, only up to {legacy_max} participants (linear); direct + "
                      "Merkle: the same commits + finalizeRoundWithResults; batched: signed commitments posted by "
                      "the relay (commits = its commitBatch transactions) + finalizeRoundWithResults",
              caption_justify="left")
    t.add_column("participants", justify="right")
    t.add_column("path")
    for col in ("batches", "open", "commits", "close", "finalize", "total", "total / participant"):
        t.add_column(col, justify="right")
    for n, paths in report["paths"].items():
        for key, label in PATHS:
            r = paths.get(key)
            if r is None:
                continue
            batches = f"{r['batches']} x {r['batch_size']}" if "batches" in r else ""
            t.add_row(n, label, batches, *(f"{r[k]:,}" for k in ("open", "commits", "close", "finalize", "total")),
                      f"[bold]{r['total_per_participant']:,}[/]")
        t.add_section()
    console.print(t)

    c = report["claims"]
    claims = Table(title=f"claims by proof (result trees of {c['tree_entries']} participants), excluded above",
                   title_justify="left")
    for col in ("claim", "rounds", "proof nodes", "gas", "gas / round", "participant's first", "first of round",
                "verified"):
        claims.add_column(col, justify="right")
    for name, v in c.items():
        if not isinstance(v, dict):
            continue
        claims.add_row(name.replace("_", " "), str(v["rounds_claimed"]), "/".join(map(str, v["proof_nodes"])),
                       f"{v['gas']:,}", f"{v['gas_per_round']:,}", "yes" if v["first_claim"] else "no",
                       "/".join("yes" if f else "no" for f in v["first_of_round"]), "yes" if v["verified"] else "NO")
    console.print(claims)

    most = str(max(int(n) for n in report["paths"]))
    best = min((r for k, r in report["paths"][most].items() if k.startswith("batched") and r is not None),
               key=lambda r: r["total_per_participant"])
    console.print(f"batched at {most} participants: {best['total_per_participant']:,} gas per participant "
                  f"({best['batches']} x {best['batch_size']}), claims excluded; wall {report['wall_seconds']} s")


def run(participant_counts: list[int], json_out: Path | None, *, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    console = Console(width=None if sys.stdout.isatty() else 140)  # a log or a pipe gets whole tables
    with tempfile.TemporaryDirectory(prefix="fedledger-gas-") as tmp, \
            console.status("measuring gas on Hardhat") as status:
        report = measure(participant_counts, work_dir=Path(tmp), batch_size=batch_size, on_stage=status.update)
    print_report(console, report)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2) + "\n")
    return 0
