"""The devnet stack against real daemons: Hardhat node + Kubo on loopback, started and stopped by process id."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from chain.accounts import devnet_wallets
from chain.deploy import Deployment, Manifest
from chain.errors import ChainUnavailable, ContractRevert
from fedledger.devnet import Devnet, DevnetConfig, DevnetError, _terminate, free_port, pid_alive
from fedledger.roles import Aggregator, Operator, ParticipantClient
from fedledger.stack import devnet_stack
from fedledger.wiring import connect_rpc
from storage import BlobIntegrityError, BlobNotFound, StorageUnavailable
from storage.kubo import KuboBlobStore
from trainer.model import ModelSpec, init_params
from trainer.rules import RuleConfig


def fresh_config(tmp_path: Path) -> DevnetConfig:
    return DevnetConfig(dir=tmp_path / "devnet", rpc_port=free_port(), ipfs_api_port=free_port(),
                        ipfs_gateway_port=free_port())


def test_kubo_store_adds_pins_and_checks_content_hashes(devnet: Devnet) -> None:
    store = KuboBlobStore(devnet.cfg.ipfs_api)
    big = bytes(range(256)) * 20_000  # 5 MB: several chunks, a dag-pb root
    small = b"a small update"
    for data in (big, small):
        ref = store.put(data)
        assert ref.uri.startswith("bafy" if data is big else "bafk")  # CIDv1; raw leaf for a single chunk
        assert store.get(ref.uri, ref.content_hash) == data
    other = store.put(b"other bytes")
    with pytest.raises(BlobIntegrityError):
        store.get(other.uri, store.put(small).content_hash)  # the CID's bytes are not the committed ones
    with pytest.raises(BlobNotFound):
        store.get("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", other.content_hash)
    pins = store._client.pin.ls(type="recursive")["Keys"]
    assert other.uri in pins


def test_up_twice_is_harmless_and_status_tells_what_runs(devnet: Devnet) -> None:
    before = devnet._pids()
    manifest = devnet.up()
    assert devnet._pids() == before
    assert manifest == Manifest.read(devnet.cfg.manifest_path)
    status = devnet.status()
    assert status["hardhat"]["running"] and status["kubo"]["running"]
    assert status["chain_id"] == 31337 and status["endpoints"]["rpc"] == devnet.cfg.rpc_url


def test_up_will_not_reuse_an_open_registry_as_a_consortiums(devnet: Devnet) -> None:
    assert Manifest.read(devnet.cfg.manifest_path).stake["admissionRequired"] == 0
    assert devnet_stack(devnet.cfg).deployment.registry.admission_required() is False
    with pytest.raises(DevnetError, match="deployed open registration, not admission"):
        Devnet(replace(devnet.cfg, admission=True)).up()
    assert devnet.up() == Manifest.read(devnet.cfg.manifest_path)  # the deployment is kept as it was


def test_ipfs_down_during_submission_is_a_clear_error_and_nothing_is_committed(devnet: Devnet, tmp_path: Path) -> None:
    cfg = fresh_config(tmp_path)
    lone_kubo = Devnet(cfg)
    lone_kubo.start_kubo()
    stack = devnet_stack(devnet.cfg)
    store = KuboBlobStore(cfg.ipfs_api, timeout=5)
    spec = ModelSpec(64, 10)  # the digits model, like every demo on the shared devnet
    (address,) = devnet_wallets(stack.transactor, 99, ["participant/ipfs-fault"]).values()
    client = ParticipantClient(stack.deployment, store, address, spec)
    client.register()
    rounds = stack.deployment.rounds
    operator = Operator(stack.deployment, stack.store, stack.operator)
    if rounds.global_model().model_hash == bytes(32):
        operator.publish_genesis(init_params(spec, 0))
    count = rounds.round_count()
    assert count == 0 or rounds.get_round(count).state == 3, "tests must leave the shared devnet's rounds finalized"
    round_id, _ = operator.open_round(RuleConfig())
    try:
        lone_kubo.down()  # IPFS goes away before the participant uploads
        with pytest.raises(StorageUnavailable, match=f"Kubo at {cfg.ipfs_api} is unreachable"):
            client.submit(round_id, init_params(spec, 0))
        assert rounds.commitment_of(round_id, address) == bytes(32)
        assert rounds.get_round(round_id).submissions == 0
    finally:
        operator.close_round(round_id)
        Aggregator(stack.deployment, stack.store, stack.aggregator).finalize(round_id)


def test_unreachable_chain_node_fails_after_bounded_retries() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(ChainUnavailable, match=f"no Ethereum node answers at http://127.0.0.1:{port}.*after 3 attempts"):
        connect_rpc(f"http://127.0.0.1:{port}", timeout=1, retries=2)
    assert time.monotonic() - started < 30


def test_restarted_node_makes_up_redeploy_and_rewrite_the_manifest(tmp_path: Path) -> None:
    net = Devnet(fresh_config(tmp_path))
    try:
        first = net.up()
        first_text = net.cfg.manifest_path.read_text()
        hardhat_pid = int(net._pids()["hardhat"]["pid"])
        _terminate(hardhat_pid)
        assert not pid_alive(hardhat_pid)
        net.cfg.manifest_path.write_text(first_text.replace('"network": "hardhat-devnet"', '"network": "stale"'))
        second = net.up()
        assert int(net._pids()["hardhat"]["pid"]) != hardhat_pid
        assert second.network == "hardhat-devnet"  # rewritten, not the stale file
        transactor = connect_rpc(net.cfg.rpc_url)
        deployment = Deployment.attach(transactor, second)
        assert deployment.rounds.round_count() == 0
        assert len(transactor.w3.eth.get_code(second.contracts["FederatedRounds"])) > 0
        assert first.chain_id == second.chain_id
    finally:
        pids = [int(e["pid"]) for e in net._pids().values()]
        stopped = net.down(wipe=True)
        assert len(stopped) == 2
        assert not [p for p in pids if pid_alive(p)]
        assert not net.cfg.dir.exists()


def test_a_busy_port_is_a_clear_message(tmp_path: Path) -> None:
    cfg = fresh_config(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", cfg.rpc_port))
        squatter.listen(1)
        with pytest.raises(DevnetError, match=f"port {cfg.rpc_port} on 127.0.0.1 .* is in use by another process"):
            Devnet(cfg).start_hardhat()


def test_a_missing_kubo_binary_is_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDLEDGER_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(DevnetError, match="Kubo \\(ipfs\\) not found: run scripts/install-kubo"):
        Devnet(fresh_config(tmp_path)).start_kubo()


def test_nonce_manager_is_safe_under_concurrent_sends_from_one_sender(devnet: Devnet) -> None:
    stack = devnet_stack(devnet.cfg)
    token = stack.deployment.token
    spenders = [f"0x{i:040x}" for i in range(1, 13)]
    errors: list[BaseException] = []

    def approve(spender: str) -> None:
        try:
            token.approve(spender, 7, sender=stack.operator)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=approve, args=(s,)) for s in spenders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(token.allowance(stack.operator, s) == 7 for s in spenders)


def test_reverts_on_a_real_node_decode_into_the_same_typed_errors(devnet: Devnet) -> None:
    stack = devnet_stack(devnet.cfg)
    with pytest.raises(ContractRevert) as info:
        stack.deployment.rounds.finalize_round(10**6, b"\x01" * 32, "x", [], [], [], sender=stack.aggregator)
    assert info.value.error == "RoundsUnknownRound"
    assert info.value.args_by_name["roundId"] == 10**6


def test_event_reads_in_small_windows_equal_one_big_window(devnet: Devnet) -> None:
    stack = devnet_stack(devnet.cfg)
    start = stack.deployment.manifest.deployment_block
    rounds = stack.deployment.rounds
    assert rounds.role_granted_events(from_block=start, window=1) == rounds.role_granted_events(from_block=start)
    assert len(rounds.role_granted_events(from_block=start)) >= 3


def test_a_dp_round_on_the_real_devnet_records_the_privacy_ledger_and_audits(devnet: Devnet) -> None:
    """Three DP participants on Hardhat + Kubo: one commits by its own transaction through the PrivacyLedger, two
    are relayed by the operator; the operator's budget refuses a fourth update with the typed error; the audit of
    the round recomputes every epsilon from the mechanism in the blob fetched back from Kubo."""
    from fedledger.audit import Auditor
    from fedledger.privacy import PrivacyBudgetExceeded, ledger_of
    from fedledger.history import ChainHistory
    from trainer.data import load_dataset
    from trainer.local import LocalConfig
    from trainer.privacy import PrivacyConfig, train_local_dp

    stack = devnet_stack(devnet.cfg)
    d = stack.deployment
    assert d.privacy is not None and d.manifest.contracts["PrivacyLedger"] == d.privacy.address
    spec = ModelSpec(64, 10)
    wallets = devnet_wallets(stack.transactor, 99, [f"participant/dp-{i}" for i in range(4)])
    clients = [ParticipantClient(d, stack.store, a, spec) for a in wallets.values()]
    for c in clients:
        if d.registry.status_of(c.address) == 0:
            c.register()
    operator = Operator(d, stack.store, stack.operator)
    if d.rounds.global_model().model_hash == bytes(32):
        operator.publish_genesis(init_params(spec, 0))
    count = d.rounds.round_count()
    assert count == 0 or d.rounds.get_round(count).state == 3, "tests must leave the shared devnet's rounds finalized"
    operator.set_privacy_budget(0.5, clients[3].address)  # below one round's epsilon: refused
    round_id, _ = operator.open_round(RuleConfig())
    ds = load_dataset("digits", seed=0)
    mechs = {}
    try:
        base = clients[0].fetch_global_model()
        for i, c in enumerate(clients):
            x, y = ds.x_train[i * 90 : (i + 1) * 90], ds.y_train[i * 90 : (i + 1) * 90]
            update, mech = train_local_dp(spec, base, x, y, LocalConfig(), PrivacyConfig(target_epsilon=2.0), seed=i)
            if i == 3:
                with pytest.raises(PrivacyBudgetExceeded) as info:
                    c.submit_private(round_id, update, mech)
                assert (info.value.requested_micro, info.value.budget_micro) == (mech.epsilon_micro, 500_000)
                continue
            if i == 0:
                c.submit_private(round_id, update, mech)
            else:
                ref = c.upload_private(update, mech)
                operator.relay_private(c.address, round_id, ref, mech, c.sign(round_id, ref))
            mechs[c.address] = mech
    finally:
        operator.close_round(round_id)
        Aggregator(d, stack.store, stack.aggregator).finalize(round_id)
    report = Auditor(d, stack.store).verify(round_id)
    assert report.verified, report.failure_lines()
    assert [c.name for c in report.rounds[0].checks][-1] == "privacy"
    history = ChainHistory(d)
    for address, mech in mechs.items():
        led = ledger_of(history, address)
        assert led.entries[-1].round_id == round_id and led.entries[-1].epsilon_micro == mech.epsilon_micro
        assert report.privacy[address]["rounds"][-1]["recomputed_epsilon"] == mech.epsilon
    assert d.rounds.commitment_of(round_id, clients[3].address) == bytes(32)
