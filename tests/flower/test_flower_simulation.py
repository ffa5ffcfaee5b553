"""The FedLedger strategy in a Flower run on the embedded stack (in-process EVM + local blobs).

Seven nodes run the example app's ClientApp through ``LocalGrid`` (Flower's simulation minus Ray, which the lock
does not hold): node 0 sign-flips its update; node 6 also forges, in round 2, a reply in the name of node 5's
wallet (its own signature over node 4's address); its reply in round 3 is junk. The chain and the blob
store must then show: the attacker rejected and unpaid in every round, honest nodes paid, the forgery and the junk
not relayed, and the auditor verifying every round from chain + blobs alone.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedledger.audit import Auditor
from fedledger.flower import FedLedger, FlowerLedger
from fedledger.flower.client import flower_wallet_address, train_reply
from fedledger.flower.protocol import UPDATE_KEY, SignedUpdate
from fedledger.flower.simulation import run_local
from fedledger.flower.arrays import arrays_of, params_of
from fedledger.stack import embedded_stack
from trainer.data import load_dataset
from trainer.model import ModelSpec, init_params
from storage.base import sha256
from trainer.rules import Status
from trainer.serialization import serialize

ROOT = Path(__file__).resolve().parents[2]
NODES, ROUNDS, SEED = 7, 3, 7
ATTACKER, FORGER, VICTIM = 0, 6, 5


def example_client_app() -> ClientApp:
    path = ROOT / "examples" / "flower-app" / "fedledger_app" / "client_app.py"
    spec = importlib.util.spec_from_file_location("fedledger_app_client_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.app  # type: ignore[no-any-return]


def misbehaving(inner: ClientApp) -> ClientApp:
    """The example ClientApp, except on the forger's node: a reply in the victim's name (round 2), junk (round 3)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        reply = inner(msg, context)
        round_ = int(msg.content.config_records["config"]["server-round"])
        if context.node_config.get("partition-id") != FORGER or round_ == 1:
            return reply
        if round_ == 3:
            return Message(RecordDict({UPDATE_KEY: ConfigRecord({"participant": "not an address"}),
                                       "metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)
        own = SignedUpdate.from_content(reply.content)
        forged = SignedUpdate(flower_wallet_address(SEED, VICTIM), own.update, own.content_hash, own.uri,
                              own.signature, own.registration_signature, own.registration_deadline, own.num_examples)
        return Message(RecordDict({UPDATE_KEY: forged.to_record(), "metrics": MetricRecord({"num-examples": 1})}),
                       reply_to=msg)

    return app


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    stack = embedded_stack(tmp_path_factory.mktemp("flower-sim"), seed=SEED)
    ledger = FlowerLedger(stack)
    data = load_dataset("digits", seed=0)
    spec = ModelSpec(data.num_features, data.num_classes)
    server_app = ServerApp()
    results: dict[str, Any] = {}

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedLedger(ledger, fraction_evaluate=0.0, min_train_nodes=NODES, min_available_nodes=NODES)
        results["result"] = strategy.start(grid=grid, initial_arrays=arrays_of(init_params(spec, 0)),
                                           num_rounds=ROUNDS)

    nodes = [{"partition-id": i, "num-partitions": NODES, "wallet-seed": SEED, "wallet-index": i,
              "attack": "signflip" if i == ATTACKER else "none"} for i in range(NODES)]
    run_local(server_app, misbehaving(example_client_app()), nodes, {"dataset": "digits", "data-seed": 0})
    return {"stack": stack, "ledger": ledger, "result": results["result"],
            "wallets": [flower_wallet_address(SEED, i) for i in range(NODES)]}


def test_every_round_is_committed_and_the_auditor_verifies_them_from_chain_and_blobs(run: dict[str, Any]) -> None:
    stack = run["stack"]
    assert stack.deployment.rounds.round_count() == ROUNDS
    report = Auditor(stack.deployment, stack.store).verify()
    assert report.verified, report.failure_lines()
    assert [r.round_id for r in report.rounds] == list(range(1, ROUNDS + 1))


def test_flower_gets_the_model_the_chain_committed(run: dict[str, Any]) -> None:
    final: ArrayRecord = run["result"].arrays
    last = run["ledger"].rounds[-1]
    assert stack_model_hash(run) == last.new_model.content_hash
    assert sha256(serialize(params_of(final))) == last.new_model.content_hash


def stack_model_hash(run: dict[str, Any]) -> bytes:
    return bytes(run["stack"].deployment.rounds.global_model().model_hash)


def test_the_sign_flipping_node_is_slashed_then_shut_out_and_never_paid(run: dict[str, Any]) -> None:
    """Round 1 rejects and slashes it (10 % of the stake the operator sponsored); below the minimum stake it cannot
    commit again, and the operator does not top up a slashed identity, so later rounds go on without it."""
    attacker = run["wallets"][ATTACKER]
    first, *later = run["ledger"].rounds
    assert attacker in first.committed and attacker in first.rejected, first.verdicts
    assert first.rewards[attacker] == 0
    registry = run["stack"].deployment.registry
    stake = registry.stake_of(attacker)
    assert (stake.amount, stake.slashed) == (registry.min_stake() * 9 // 10, registry.min_stake() // 10)
    for record in later:
        assert attacker not in record.committed
        (refused,) = [f for f in record.failures if f.participant == attacker]
        assert "RegistryStakeTooLow" in refused.reason
    assert run["stack"].deployment.token.balance_of(attacker) == 0


def test_honest_nodes_are_accepted_and_paid_the_round_budget(run: dict[str, Any]) -> None:
    honest = [w for i, w in enumerate(run["wallets"]) if i != ATTACKER]
    token = run["stack"].deployment.token
    assert all(token.balance_of(w) > 0 for w in honest)
    for record in run["ledger"].rounds:
        assert set(record.accepted) <= set(honest)
        assert len(record.accepted) >= len(honest) - 1  # the forger sends no valid update in rounds 2 and 3
        assert record.minted == sum(record.rewards.values()) > 0
    statuses = {v.participant: v.status for v in run["ledger"].rounds[0].verdicts}
    assert statuses[run["wallets"][ATTACKER]] != Status.ACCEPTED


def test_a_reply_in_another_wallets_name_is_not_relayed(run: dict[str, Any]) -> None:
    rounds = run["ledger"].rounds
    forger, victim = run["wallets"][FORGER], run["wallets"][VICTIM]
    attacker = run["wallets"][ATTACKER]  # shut out after its slash (see above)
    (failure,) = [f for f in rounds[1].failures if f.participant != attacker]
    assert failure.participant == victim and "not signed by the participant it names" in failure.reason
    assert forger not in rounds[1].committed and rounds[1].committed.count(victim) == 1  # the victim's own update
    (junk,) = [f for f in rounds[2].failures if f.participant != attacker]
    assert junk.participant == "" and "missing 'update'" in junk.reason
    assert forger not in rounds[2].committed
    assert forger in rounds[0].accepted


def test_the_ledger_costs_are_measured_per_round(run: dict[str, Any]) -> None:
    first, *later = run["ledger"].rounds
    assert first.gas["register"] > 0 and all(r.gas["register"] == 0 for r in later)  # wallets register once
    for record in run["ledger"].rounds:
        assert record.gas["open"] > 0 and record.gas["commit"] > 0 and record.gas["finalize"] > 0
        assert record.seconds_total > 0
