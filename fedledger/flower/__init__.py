"""fedledger for Flower apps (flwr 1.42 Message API): the FedLedger strategy, its ledger, the participant side.

    server:  strategy = FedLedger(FlowerLedger(stack), fraction_evaluate=0.0, min_available_nodes=4)
    client:  return signed_reply(msg, account, update, num_examples)   # or train_reply(msg, context)
"""

from fedledger.flower.ledger import FlowerLedger, RelayFailure, RoundLedger
from fedledger.flower.protocol import ProtocolError, RoundTicket, SignedUpdate
from fedledger.flower.strategy import FedLedger

__all__ = ["FedLedger", "FlowerLedger", "ProtocolError", "RelayFailure", "RoundLedger", "RoundTicket", "SignedUpdate"]
