"""The participant side under Flower: what a ClientApp's train function does on a SuperNode.

    node config (per SuperNode, `flower-supernode --node-config`):
        partition-id, num-partitions   which Dirichlet share of the data set this node holds
        wallet-seed, wallet-index      DEVNET ONLY: the wallet derived from (seed, "flower/<index>")
        key-file                       or an eth-account keystore (password in $FEDLEDGER_KEYSTORE_PASSWORD)
        attack                         "none" (default) or an attack from trainer/attacks.py that needs only
                                       the node's own data and update: signflip, bitflip, noise, labelflip,
                                       freerider_zero (omniscient attacks need other nodes' updates)
    run config (the app's [tool.flwr.app.config]): dataset, alpha, data-seed, local-steps, local-epochs, lr

Under a plain Flower strategy (FedAvg, FedMedian) the node returns its trained model in "arrays", as any Flower
client does. Under FedLedger the instruction carries a RoundTicket and the node returns its update as canonical
safetensors bytes with an EIP-712 Commitment over (round, sha256, URI the server's store will give the bytes)
and a Registration, both signed with its own key: the key never leaves the node; no chain connection is needed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from eth_account import Account
from eth_account.signers.local import LocalAccount
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict

from chain.accounts import derive_devnet_account
from fedledger.flower.protocol import UPDATE_KEY, RoundTicket, SignedUpdate
from fedledger.flower.arrays import arrays_of, params_of
from fedledger.roles import sign_commitment, sign_registration
from storage import BlobRef
from storage.base import sha256
from storage.cids import uri_for
from trainer.attacks import AttackContext, apply_attack
from trainer.data import Dataset, dirichlet_partition, load_dataset
from trainer.local import LocalConfig, parse_local_steps, train_local
from trainer.model import ModelSpec, Params, accuracy
from trainer.serialization import serialize
from trainer.simulation import local_seed

CLIENT_ATTACKS = ("none", "signflip", "bitflip", "noise", "labelflip", "freerider_zero")


class ClientConfigError(ValueError):
    """The SuperNode's node config or the app's run config is missing or wrong."""


@dataclass(frozen=True)
class ParticipantSettings:
    partition_id: int
    num_partitions: int
    dataset: str
    alpha: float
    data_seed: int
    attack: str
    local: LocalConfig

    @classmethod
    def from_context(cls, context: Context) -> ParticipantSettings:
        node, run = context.node_config, context.run_config
        partition_id = _cfg_int(node, "partition-id")
        num_partitions = _cfg_int(node, "num-partitions")
        if not 0 <= partition_id < num_partitions:
            raise ClientConfigError(f"partition-id {partition_id} is not in [0, num-partitions={num_partitions})")
        attack = str(node.get("attack", "none"))
        if attack not in CLIENT_ATTACKS:
            raise ClientConfigError(f"attack {attack!r}: a SuperNode can run one of {', '.join(CLIENT_ATTACKS)}")
        defaults = LocalConfig()
        return cls(
            partition_id=partition_id,
            num_partitions=num_partitions,
            dataset=str(run.get("dataset", "digits")),
            alpha=float(run.get("alpha", 0.5)),
            data_seed=int(run.get("data-seed", 0)),
            attack=attack,
            local=dataclasses.replace(
                LocalConfig.from_option(_local_steps(run.get("local-steps"))),
                epochs=int(run.get("local-epochs", defaults.epochs)), lr=float(run.get("lr", defaults.lr)),
            ),
        )


def _local_steps(value: object) -> int | str | None:
    """The run config's ``local-steps``: a number of SGD steps, ``"epochs"`` (``local-epochs`` of the node's data) or
    ``"epochs:S"`` (those epochs, at most S steps); absent: the platform's default."""
    if value is None:
        return LocalConfig.steps
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ClientConfigError(f"local-steps must be a number of SGD steps, \"epochs\" or \"epochs:S\", got {value!r}")
    try:
        return parse_local_steps(str(value))
    except ValueError as e:
        raise ClientConfigError(f"local-steps: {e}") from None


def wallet_of(context: Context) -> LocalAccount:
    """The node's own key: a keystore file, or (devnet only) derived from a seed and an index."""
    node = context.node_config
    if "key-file" in node:
        password = os.environ.get("FEDLEDGER_KEYSTORE_PASSWORD")
        if password is None:
            raise ClientConfigError("key-file is set but $FEDLEDGER_KEYSTORE_PASSWORD is not")
        keystore = json.loads(Path(str(node["key-file"])).read_text())
        return Account.from_key(Account.decrypt(keystore, password))
    if "wallet-seed" in node and "wallet-index" in node:
        return derive_devnet_account(_cfg_int(node, "wallet-seed"), f"flower/{_cfg_int(node, 'wallet-index')}")
    raise ClientConfigError("the node config names no wallet: set key-file, or wallet-seed and wallet-index (devnet)")


def flower_wallet_address(seed: int, index: int) -> str:
    """The address of the devnet wallet a SuperNode with (wallet-seed, wallet-index) signs with."""
    return str(derive_devnet_account(seed, f"flower/{index}").address)


@lru_cache(maxsize=4)
def _data(dataset: str, seed: int, num_partitions: int, alpha: float) -> tuple[Dataset, tuple[np.ndarray, ...]]:
    data = load_dataset(dataset, seed=seed)
    parts = dirichlet_partition(data.y_train.numpy(), num_partitions, alpha, seed=seed)
    return data, tuple(parts)


def local_update(settings: ParticipantSettings, base: Params, server_round: int) -> tuple[Params, int]:
    """Train on this node's partition from ``base``; an attacking node then applies its attack. (update, n)."""
    data, parts = _data(settings.dataset, settings.data_seed, settings.num_partitions, settings.alpha)
    spec = ModelSpec(data.num_features, data.num_classes)
    idx = torch.from_numpy(parts[settings.partition_id])
    x, y = data.x_train[idx], data.y_train[idx]
    seed = local_seed(settings.data_seed, server_round, settings.partition_id)

    def train(transform: Any = None) -> Params:
        xs, ys = transform(x, y) if transform is not None else (x, y)
        return train_local(spec, base, xs, ys, settings.local, seed=seed)

    update = train()
    if settings.attack != "none":
        context = AttackContext(retrain=train, num_classes=data.num_classes)
        update = apply_attack(settings.attack, update, seed=seed, context=context)
    return update, int(idx.numel())


def sign_update(account: LocalAccount, ticket: RoundTicket, update: Params, num_examples: int) -> SignedUpdate:
    """Canonical bytes of ``update``, their sha256 and store URI, and the participant's two EIP-712 signatures."""
    blob = serialize(update)
    ref = BlobRef(sha256(blob), uri_for(ticket.uri_scheme, blob))
    return SignedUpdate(
        participant=account.address,
        update=blob,
        content_hash=ref.content_hash,
        uri=ref.uri,
        signature=sign_commitment(account, ticket.chain_id, ticket.rounds_address, ticket.round_id, ref),
        registration_signature=sign_registration(account, ticket.chain_id, ticket.registry_address,
                                                 ticket.registration_deadline),
        registration_deadline=ticket.registration_deadline,
        num_examples=num_examples,
    )


def train_reply(msg: Message, context: Context) -> Message:
    """The reply of a train instruction: a signed update (FedLedger) or the trained model (plain Flower)."""
    settings = ParticipantSettings.from_context(context)
    array_key = next(iter(msg.content.array_records))
    base = params_of(msg.content.array_records[array_key])
    server_round = int(msg.content.config_records["config"]["server-round"])
    ticket = RoundTicket.from_content(msg.content)
    if ticket is not None and sha256(serialize(base)) != ticket.base_hash:
        raise ValueError(f"the model received is not round {ticket.round_id}'s committed base model")
    update, n = local_update(settings, base, server_round)
    metrics = MetricRecord({"num-examples": n})
    if ticket is None:
        trained = {k: (base[k] + update[k]).contiguous() for k in base}
        return Message(RecordDict({array_key: arrays_of(trained), "metrics": metrics}), reply_to=msg)
    return signed_reply(msg, wallet_of(context), update, n)


def signed_reply(msg: Message, account: LocalAccount, update: Params, num_examples: int) -> Message:
    """The reply of an existing Flower app's train function under FedLedger: ``update`` is trained minus received
    (a name -> tensor mapping with the model's names and shapes), signed by ``account`` for the instruction's round."""
    ticket = RoundTicket.from_content(msg.content)
    if ticket is None:
        raise ValueError("the instruction carries no fedledger round ticket: is the server strategy FedLedger?")
    signed = sign_update(account, ticket, update, num_examples)
    metrics = MetricRecord({"num-examples": num_examples})
    return Message(RecordDict({UPDATE_KEY: signed.to_record(), "metrics": metrics}), reply_to=msg)


def evaluate_reply(msg: Message, context: Context) -> Message:
    """Accuracy of the received global model on this node's share of the held-out test set."""
    settings = ParticipantSettings.from_context(context)
    data, _ = _data(settings.dataset, settings.data_seed, settings.num_partitions, settings.alpha)
    spec = ModelSpec(data.num_features, data.num_classes)
    params = params_of(msg.content.array_records[next(iter(msg.content.array_records))])
    shares = np.array_split(np.arange(len(data.y_test)), settings.num_partitions)
    idx = torch.from_numpy(shares[settings.partition_id])
    acc = accuracy(spec, params, data.x_test[idx], data.y_test[idx])
    return Message(RecordDict({"metrics": MetricRecord({"accuracy": acc, "num-examples": int(idx.numel())})}),
                   reply_to=msg)


def _cfg_int(cfg: Any, key: str) -> int:
    if key not in cfg:
        raise ClientConfigError(f"the node config has no {key!r}")
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClientConfigError(f"{key!r} must be an integer, got {value!r}")
    return value
