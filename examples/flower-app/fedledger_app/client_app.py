"""ClientApp: train on this SuperNode's partition; under FedLedger, sign the update with the node's own wallet."""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedledger.flower.client import evaluate_reply, train_reply

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    return train_reply(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return evaluate_reply(msg, context)
