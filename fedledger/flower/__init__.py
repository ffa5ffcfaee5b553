"""fedledger for Flower apps (flwr 1.42 Message API): the FedLedger strategy, its ledger, the participant side.

    server:  strategy = FedLedger(FlowerLedger(stack), fraction_evaluate=0.0, min_available_nodes=4)
    client:  return signed_reply(msg, account, update, num_examples)   # fedledger.flower.client

The server names load on first use: a ClientApp process (one per message on a SuperNode) imports only the
participant side (fedledger.flower.client), not the chain, store and aggregation code of the server.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "FedLedger": "fedledger.flower.strategy",
    "FlowerLedger": "fedledger.flower.ledger",
    "RelayFailure": "fedledger.flower.ledger",
    "RoundLedger": "fedledger.flower.ledger",
    "ProtocolError": "fedledger.flower.protocol",
    "RoundTicket": "fedledger.flower.protocol",
    "SignedUpdate": "fedledger.flower.protocol",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)
