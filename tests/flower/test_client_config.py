"""A SuperNode's node config: its wallet and its data share; mistakes are ClientConfigError, not odd failures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from flwr.app import Context, RecordDict

from fedledger.flower.client import ClientConfigError, ParticipantSettings, flower_wallet_address, wallet_of
from trainer.local import LocalConfig


def context(node: dict[str, Any], run: dict[str, Any] | None = None) -> Context:
    return Context(1, 1000, node, RecordDict(), run or {})


def test_a_keystore_wallet_is_read_with_the_password_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = Account.create()
    keystore = Account.encrypt(account.key, "s3cret", kdf="pbkdf2", iterations=2)
    (tmp_path / "me.json").write_text(json.dumps(keystore))
    ctx = context({"key-file": str(tmp_path / "me.json")})
    monkeypatch.delenv("FEDLEDGER_KEYSTORE_PASSWORD", raising=False)
    with pytest.raises(ClientConfigError, match="FEDLEDGER_KEYSTORE_PASSWORD"):
        wallet_of(ctx)
    monkeypatch.setenv("FEDLEDGER_KEYSTORE_PASSWORD", "s3cret")
    assert wallet_of(ctx).address == account.address


def test_a_devnet_wallet_is_derived_from_seed_and_index_and_a_node_without_one_is_refused() -> None:
    assert wallet_of(context({"wallet-seed": 3, "wallet-index": 2})).address == flower_wallet_address(3, 2)
    assert flower_wallet_address(3, 2) != flower_wallet_address(3, 1) != flower_wallet_address(4, 1)
    with pytest.raises(ClientConfigError, match="names no wallet"):
        wallet_of(context({"partition-id": 0}))


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"num-partitions": 4}, "no 'partition-id'"),
        ({"partition-id": 4, "num-partitions": 4}, r"not in \[0, num-partitions=4\)"),
        ({"partition-id": "1", "num-partitions": 4}, "must be an integer"),
        ({"partition-id": 0, "num-partitions": 4, "attack": "alie"}, "a SuperNode can run one of"),
    ],
)
def test_a_wrong_node_config_is_a_client_config_error(node: dict[str, Any], message: str) -> None:
    with pytest.raises(ClientConfigError, match=message):
        ParticipantSettings.from_context(context(node))


def test_the_run_config_sets_data_and_local_training() -> None:
    s = ParticipantSettings.from_context(context(
        {"partition-id": 1, "num-partitions": 4, "attack": "signflip"},
        {"dataset": "breast_cancer", "alpha": 0.3, "data-seed": 5, "local-epochs": 1, "lr": 0.1},
    ))
    assert (s.partition_id, s.num_partitions, s.attack, s.dataset, s.alpha, s.data_seed) == (
        1, 4, "signflip", "breast_cancer", 0.3, 5)
    assert (s.local.epochs, s.local.lr, s.local.steps) == (1, 0.1, LocalConfig.steps)
    node = {"partition-id": 0, "num-partitions": 2}
    for value, steps, cap in ((6, 6, None), ("epochs", None, None), ("epochs:8", None, 8)):
        local = ParticipantSettings.from_context(context(node, {"local-steps": value, "local-epochs": 3})).local
        assert (local.steps, local.max_steps, local.epochs) == (steps, cap, 3)
    for bad, message in ((0, "local steps must be at least 1, got 0"), ("six", "expected a number of steps"),
                         (1.5, "must be a number of SGD steps")):
        with pytest.raises(ClientConfigError, match=message):
            ParticipantSettings.from_context(context(node, {"local-steps": bad}))
