"""``fedledger devnet up --node anvil``: chain state that survives a node restart. Real anvil (npm
@foundry-rs/anvil-linux-amd64) and Kubo on loopback; every process is stopped by pid."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.accounts import devnet_wallets
from chain.deploy import Manifest
from fedledger.cli import main
from fedledger.devnet import Devnet, DevnetConfig, DevnetError, free_port, pid_alive
from fedledger.roles import Aggregator, Operator, ParticipantClient
from fedledger.stack import devnet_stack
from trainer.model import ModelSpec, init_params
from trainer.rules import RuleConfig

SPEC = ModelSpec(64, 10)
STATE_INTERVAL = 1


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    cfg = DevnetConfig(dir=tmp_path_factory.mktemp("anvil") / "devnet", rpc_port=free_port(),
                       ipfs_api_port=free_port(), ipfs_gateway_port=free_port(), node="anvil",
                       state_interval=STATE_INTERVAL)
    devnet = Devnet(cfg)
    seen: set[int] = set()
    try:
        yield devnet
    finally:
        seen.update(int(e["pid"]) for e in devnet._pids().values())
        devnet.down()
        assert not [p for p in seen if pid_alive(p)], "devnet processes survived down()"


def play_round(devnet: Devnet, seed: int, *, participants: int = 3) -> int:
    """Register ``participants`` fresh wallets, open a round, each submits, close, finalize. Returns the round id."""
    stack = devnet_stack(devnet.cfg)
    operator = Operator(stack.deployment, stack.store, stack.operator)
    if stack.deployment.rounds.global_model().model_hash == bytes(32):
        operator.publish_genesis(init_params(SPEC, 0))
    labels = [f"participant/persist/{seed}/{i}" for i in range(participants)]
    clients = [ParticipantClient(stack.deployment, stack.store, a, SPEC)
               for a in devnet_wallets(stack.transactor, seed, labels).values()]
    for c in clients:
        c.register()
    round_id, _ = operator.open_round(RuleConfig())
    for i, c in enumerate(clients):
        c.submit(round_id, init_params(SPEC, 100 * seed + i))
    operator.close_round(round_id)
    Aggregator(stack.deployment, stack.store, stack.aggregator).finalize(round_id)
    return round_id


def round_history(devnet: Devnet) -> tuple[list[object], list[object], list[object]]:
    """Every round's on-chain record, and the UpdateCommitted and RoundFinalized logs, read from the node."""
    stack = devnet_stack(devnet.cfg)
    rounds, start = stack.deployment.rounds, stack.deployment.manifest.deployment_block
    return ([rounds.get_round(r) for r in range(1, rounds.round_count() + 1)],
            list(rounds.update_committed_events(from_block=start)),
            list(rounds.round_finalized_events(from_block=start)))


def audit_verifies(devnet: Devnet) -> bool:
    return main(["audit", "verify", "--manifest", str(devnet.cfg.manifest_path)]) == 0


def wait_for_state_dump(devnet: Devnet, block: int, timeout: float = 60.0) -> None:
    """Until anvil's periodic dump holds ``block`` (it writes every STATE_INTERVAL s; bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(devnet.cfg.anvil_state_path.read_text())["best_block_number"] >= block:
                return
        except (FileNotFoundError, ValueError, KeyError):
            pass  # not written yet, or caught mid-write
        time.sleep(0.2)
    pytest.fail(f"anvil did not dump block {block} to {devnet.cfg.anvil_state_path} within {timeout}s")


def test_rounds_survive_down_and_up_and_a_killed_node(net: Devnet) -> None:
    first = net.up()
    manifest_text = net.cfg.manifest_path.read_text()
    assert first.network == "anvil-devnet" and first.chain_id == 31337
    first_round = play_round(net, 1)
    history = round_history(net)
    records, commits, finalized = history
    assert len(records) == first_round and (records[-1].state, records[-1].submissions) == (3, 3)
    assert len(commits) >= 3 and finalized[-1].args.round_id == first_round
    assert audit_verifies(net)

    # down (SIGTERM: anvil writes its state on exit), then up: same contracts, manifest untouched, history intact
    anvil_pid = int(net._pids()["anvil"]["pid"])
    head_at_down = devnet_stack(net.cfg).transactor.w3.eth.block_number
    assert any("anvil" in s for s in net.down())
    assert not pid_alive(anvil_pid)
    second = net.up()
    assert int(net._pids()["anvil"]["pid"]) != anvil_pid
    assert json.loads(net.cfg.anvil_last_good_path.read_text())["best_block_number"] == head_at_down
    assert second == first and net.cfg.manifest_path.read_text() == manifest_text
    assert round_history(net) == history
    assert audit_verifies(net)
    second_round = play_round(net, 2)
    assert second_round == first_round + 1

    # SIGKILL after the periodic dump has the last block: nothing is lost
    head = devnet_stack(net.cfg).transactor.w3.eth.block_number
    wait_for_state_dump(net, head)
    history = round_history(net)
    anvil_pid = int(net._pids()["anvil"]["pid"])
    os.killpg(anvil_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(anvil_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(anvil_pid)
    third = net.up()  # kubo is still running and is reused; anvil restarts from the dumped state
    assert third == first and net.cfg.manifest_path.read_text() == manifest_text
    assert round_history(net) == history
    assert devnet_stack(net.cfg).transactor.w3.eth.block_number == head
    assert audit_verifies(net)
    assert play_round(net, 3) == second_round + 1
    assert audit_verifies(net)


def test_a_directory_running_anvil_refuses_a_hardhat_node(net: Devnet) -> None:
    net.up()
    hardhat = Devnet(DevnetConfig(dir=net.cfg.dir, rpc_port=net.cfg.rpc_port, ipfs_api_port=net.cfg.ipfs_api_port,
                                  ipfs_gateway_port=net.cfg.ipfs_gateway_port, node="hardhat"))
    with pytest.raises(DevnetError, match="this devnet directory already runs anvil"):
        hardhat.start_node()


def test_unknown_node_and_bad_interval_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DevnetError, match="unknown devnet node 'geth'"):
        DevnetConfig(dir=tmp_path, node="geth")
    with pytest.raises(DevnetError, match="state_interval must be at least 1 second"):
        DevnetConfig(dir=tmp_path, node="anvil", state_interval=0)


def test_the_manifest_names_the_anvil_node(net: Devnet) -> None:
    net.up()
    assert Manifest.read(net.cfg.manifest_path).network == "anvil-devnet"


def test_a_state_file_cut_short_by_a_kill_mid_dump_is_a_clear_error(net: Devnet, tmp_path: Path) -> None:
    """anvil writes its state file in place: a node killed while dumping leaves it cut short."""
    net.up()
    cfg = DevnetConfig(dir=tmp_path / "cut", rpc_port=free_port(), ipfs_api_port=free_port(),
                       ipfs_gateway_port=free_port(), node="anvil")
    cfg.dir.mkdir()
    data = net.cfg.anvil_state_path.read_bytes()
    cfg.anvil_state_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DevnetError, match="is cut short .* no earlier copy exists, or start afresh"):
        Devnet(cfg).start_anvil()
    cfg.anvil_last_good_path.write_bytes(data)
    with pytest.raises(DevnetError, match=f"the copy from the last start that loaded is {cfg.anvil_last_good_path}"):
        Devnet(cfg).start_anvil()
    assert not (cfg.dir / "pids.json").exists()  # nothing was started
