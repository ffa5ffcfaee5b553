"""``FedLedger``: a Flower strategy (flwr 1.42 Message API) that settles every round on fedledger.

It is Flower's FedAvg for sampling, message construction and evaluation; training rounds go through the ledger:

    configure_train   open round r on-chain (rule + base model committed); the instruction carries a RoundTicket
    aggregate_train   every reply's SignedUpdate is checked and relayed (commitUpdateSigned); the round is closed
                      and finalized by the median-referenced rule (Aggregator.finalize): accepted set, scores,
                      reputation, minted rewards and the new global model committed; that model goes back to Flower

The strategy adapts formats only; chain and store work is ``FlowerLedger``'s. Replies that are errors or carry no
valid signed update are recorded as failures of the round (``ledger.rounds[-1].failures``), never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedledger.flower.arrays import arrays_of, params_of
from fedledger.flower.ledger import FlowerLedger, RelayFailure, RoundLedger
from fedledger.flower.protocol import TICKET_KEY, ProtocolError, SignedUpdate
from storage.base import sha256
from trainer.serialization import serialize

log = logging.getLogger(__name__)
TOKEN_UNIT = 10**18


class FedLedger(FedAvg):
    """Drop-in for ``FedAvg`` whose rounds are committed, verified and paid on fedledger.

    ``ledger``: a ``FlowerLedger`` over a stack (embedded or devnet). The other arguments are FedAvg's (sampling,
    evaluation, keys); FedAvg's weighted averaging is replaced by the ledger's committed rule.
    """

    def __init__(self, ledger: FlowerLedger, **fedavg_kwargs: Any) -> None:
        super().__init__(**fedavg_kwargs)
        self.ledger = ledger
        self._open: RoundLedger | None = None

    def summary(self) -> None:
        super().summary()
        d = self.ledger.stack.deployment
        log.info("fedledger: %s stack, chain %d, FederatedRounds %s, blobs in %s, rule %s (0x%s)",
                 self.ledger.stack.name, d.manifest.chain_id, d.rounds.address, self.ledger.stack.store.location,
                 self.ledger.rule.aggregator, self.ledger.rule.rule_hash().hex()[:16])

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        params = params_of(arrays)
        if server_round == 1:
            self.ledger.ensure_genesis(params)
        record = self.ledger.open()
        if sha256(serialize(params)) != record.ticket.base_hash:
            raise ValueError(
                f"round {record.round_id} starts from 0x{record.ticket.base_hash.hex()} on-chain, but Flower holds "
                "another model: the strategy's arrays must be the ledger's global model"
            )
        self._open = record
        messages = list(super().configure_train(server_round, arrays, config, grid))
        for message in messages:
            message.content[TICKET_KEY] = record.ticket.to_record()
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        record = self._open
        if record is None:
            raise RuntimeError("aggregate_train without configure_train: no fedledger round is open")
        self._open = None
        for reply in replies:
            if reply.has_error():
                record.failures.append(RelayFailure("", f"node {reply.metadata.src_node_id}: {reply.error.reason}"))
                continue
            try:
                update = SignedUpdate.from_content(reply.content)
            except ProtocolError as exc:
                record.failures.append(RelayFailure("", f"node {reply.metadata.src_node_id}: {exc}"))
                continue
            self.ledger.relay(record, update)
        new_params = self.ledger.settle(record)
        minted_to = sum(record.rewards.values())
        metrics = MetricRecord({
            "fedledger-round": record.round_id,
            "accepted": len(record.accepted),
            "rejected": len(record.rejected),
            "not-relayed": len(record.failures),
            "minted-fed": minted_to / TOKEN_UNIT,
            "ledger-gas": record.gas_total,
            "ledger-seconds": record.seconds_total,
        })
        return arrays_of(new_params), metrics
