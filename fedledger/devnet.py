"""The devnet stack for operators: a chain node and a Kubo daemon on loopback, contracts deployed, a manifest.

    fedledger devnet up [--dir .fedledger/devnet --rpc-port 8545 --ipfs-api-port 5001] [--node hardhat|anvil]
    fedledger devnet status
    fedledger devnet down [--wipe]

Processes are started in their own sessions and tracked by process id in ``<dir>/pids.json``; ``down`` stops
exactly those. Logs: ``<dir>/logs/<node>.log`` and ``<dir>/logs/kubo.log``. ``up`` is idempotent: running
processes are reused and the deployment is kept while its contracts are still on the chain; after a node restart
it redeploys and rewrites ``<dir>/manifest.json`` if the contracts are gone.

The node is Hardhat 2 by default (keeps no state: a restart is an empty chain). ``--node anvil`` runs anvil
(Foundry, npm ``@foundry-rs/anvil-linux-amd64``) with ``--state <dir>/anvil-state.json``: the chain (accounts,
contract code and storage, blocks, receipts and logs) is written on exit and every ``state_interval`` seconds, and
loaded on the next start, so ``up`` after ``down`` (or after the node was killed: at most the last interval is lost)
finds the same contracts and keeps the manifest.

DEVNET ONLY: the admin, operator and aggregator keys are derived from ``--seed`` (chain/accounts.py) and funded
from Hardhat's unlocked account.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from chain.accounts import devnet_wallets, fund_from_node
from chain.deploy import Deployment, Manifest, deploy_all
from chain.errors import ChainError, ChainUnavailable
from chain.transactor import Transactor
from fedledger.wiring import connect_rpc, default_stake_params
from storage.kubo import KuboBlobStore

PROJECT_ROOT = Path(__file__).resolve().parents[1]
HARDHAT_DIR = PROJECT_ROOT / "hardhat"
KUBO_VERSION = "v0.39.0"
ROLE_LABELS = ("admin", "operator", "aggregator")
NODES = ("hardhat", "anvil")
DEVNET_CHAIN_ID = 31337  # Hardhat's and anvil's default; set explicitly for anvil so a state file cannot change it


class DevnetError(Exception):
    """The devnet cannot be started or reached; the message says what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("FEDLEDGER_CACHE", Path.home() / ".cache" / "fedledger"))


def find_kubo() -> Path:
    """The Kubo binary: $FEDLEDGER_KUBO, the project's cached build, or ``ipfs`` on PATH."""
    candidates = [os.environ.get("FEDLEDGER_KUBO"), str(cache_dir() / f"kubo-{KUBO_VERSION}" / "bin" / "ipfs")]
    candidates.append(shutil.which("ipfs"))
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    raise DevnetError(f"Kubo (ipfs) not found: run scripts/install-kubo (builds {KUBO_VERSION} into {cache_dir()})")


def find_anvil() -> Path:
    """The anvil binary: $FEDLEDGER_ANVIL, or the one npm installed into hardhat/node_modules (scripts/bootstrap)."""
    candidates = [os.environ.get("FEDLEDGER_ANVIL"),
                  str(HARDHAT_DIR / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil")]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    raise DevnetError("anvil not found in hardhat/node_modules/@foundry-rs/anvil-linux-amd64: run scripts/bootstrap")


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


@dataclass
class DevnetConfig:
    dir: Path = field(default_factory=lambda: Path(".fedledger/devnet"))
    host: str = "127.0.0.1"
    rpc_port: int = 8545
    ipfs_api_port: int = 5001
    ipfs_gateway_port: int = 8080
    seed: int = 0
    start_timeout: float = 90.0
    node: str = "hardhat"  # or "anvil": a node whose chain state survives a restart (see the module docstring)
    state_interval: int = 2  # anvil: seconds between state dumps, so a killed node loses at most this much
    admission: bool = False  # deploy a consortium's registry: only operator-admitted wallets may register

    def __post_init__(self) -> None:
        if self.node not in NODES:
            raise DevnetError(f"unknown devnet node {self.node!r}: choose one of {', '.join(NODES)}")
        if self.state_interval < 1:
            raise DevnetError(f"state_interval must be at least 1 second, not {self.state_interval}")

    @property
    def anvil_state_path(self) -> Path:
        return self.dir / "anvil-state.json"

    @property
    def anvil_last_good_path(self) -> Path:
        return self.dir / "anvil-state.last-good.json"

    @property
    def rpc_url(self) -> str:
        return f"http://{self.host}:{self.rpc_port}"

    @property
    def ipfs_api(self) -> str:
        return f"/ip4/{self.host}/tcp/{self.ipfs_api_port}/http"

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"


class Devnet:
    def __init__(self, cfg: DevnetConfig) -> None:
        if cfg.host not in ("127.0.0.1", "localhost", "::1"):
            raise DevnetError(f"the devnet binds loopback only, not {cfg.host}")
        self.cfg = cfg
        self.pid_file = cfg.dir / "pids.json"
        self.logs = cfg.dir / "logs"

    # ------------------------------------------------------------------ processes

    def _pids(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.pid_file.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def _save_pids(self, pids: dict[str, Any]) -> None:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(json.dumps(pids, indent=2) + "\n")

    def _running(self, name: str) -> int | None:
        entry = self._pids().get(name)
        if entry and pid_alive(int(entry["pid"])):
            return int(entry["pid"])
        return None

    def _spawn(self, name: str, argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **(env or {})},
        )
        log.close()
        pids = self._pids()
        pids[name] = {"pid": proc.pid, "argv": argv}
        self._save_pids(pids)
        return proc.pid

    def _require_port(self, port: int, what: str, grace: float = 5.0) -> None:
        deadline = time.monotonic() + grace  # a process we just stopped may take a moment to release it
        while not port_is_free(self.cfg.host, port) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not port_is_free(self.cfg.host, port):
            raise DevnetError(
                f"port {port} on {self.cfg.host} (for {what}) is in use by another process: stop it or choose "
                f"another port (fedledger devnet up --help)"
            )

    def _wait(self, what: str, probe: Any, pid: int) -> None:
        deadline = time.monotonic() + self.cfg.start_timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                raise DevnetError(f"{what} exited during start-up: see {self.logs / (what + '.log')}")
            try:
                probe()
                return
            except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
                time.sleep(0.3)
        raise DevnetError(f"{what} did not become ready in {self.cfg.start_timeout:.0f}s: see {self.logs}")

    def start_hardhat(self) -> int:
        pid = self._running("hardhat")
        if pid is not None:
            return pid
        cli = HARDHAT_DIR / "node_modules" / "hardhat" / "internal" / "cli" / "cli.js"
        if not cli.is_file():
            raise DevnetError("Hardhat is not installed in hardhat/node_modules: run scripts/bootstrap")
        node = shutil.which("node")
        if node is None:
            raise DevnetError("node is not on PATH (Node 20 is needed for the Hardhat node)")
        self._require_port(self.cfg.rpc_port, "the Hardhat JSON-RPC")
        argv = [node, str(cli), "node", "--hostname", self.cfg.host, "--port", str(self.cfg.rpc_port)]
        pid = self._spawn("hardhat", argv, cwd=HARDHAT_DIR)
        self._wait("hardhat", lambda: connect_rpc(self.cfg.rpc_url, timeout=2, retries=0).chain_id, pid)
        return pid

    def start_anvil(self) -> int:
        pid = self._running("anvil")
        if pid is not None:
            return pid
        anvil = find_anvil()
        self._check_anvil_state()
        self._require_port(self.cfg.rpc_port, "the anvil JSON-RPC")
        argv = [str(anvil), "--host", self.cfg.host, "--port", str(self.cfg.rpc_port),
                "--chain-id", str(DEVNET_CHAIN_ID), "--state", str(self.cfg.anvil_state_path.resolve()),
                "--state-interval", str(self.cfg.state_interval), "--preserve-historical-states"]
        pid = self._spawn("anvil", argv, cwd=self.cfg.dir)
        self._wait("anvil", lambda: connect_rpc(self.cfg.rpc_url, timeout=2, retries=0).chain_id, pid)
        return pid

    def _check_anvil_state(self) -> None:
        """anvil rewrites its state file in place (open with O_TRUNC, then write; seen with strace on 1.7.1), so a
        node killed during a dump leaves a cut-short file it then refuses to load. Keep a copy of the last state
        that parsed, taken at each start, and refuse a broken file with a message saying what to do."""
        state = self.cfg.anvil_state_path
        if not state.is_file():
            return
        good = self.cfg.anvil_last_good_path
        try:
            json.loads(state.read_bytes())
        except ValueError:
            hint = (f"the copy from the last start that loaded is {good}: move it to {state} to resume from there"
                    if good.is_file() else "no earlier copy exists")
            raise DevnetError(f"{state} is cut short (the node was killed while writing it); {hint}, or start "
                              f"afresh with `fedledger devnet down --wipe`") from None
        tmp = good.with_name(good.name + ".tmp")
        shutil.copyfile(state, tmp)
        os.replace(tmp, good)

    def start_node(self) -> int:
        """The configured chain node (hardhat or anvil)."""
        other = next(n for n in NODES if n != self.cfg.node)
        if self._running(other) is not None:
            raise DevnetError(f"this devnet directory already runs {other}: `fedledger devnet down` it before "
                              f"starting {self.cfg.node}")
        return self.start_anvil() if self.cfg.node == "anvil" else self.start_hardhat()

    def start_kubo(self) -> int:
        pid = self._running("kubo")
        if pid is not None:
            return pid
        ipfs = find_kubo()
        repo = self.cfg.dir / "ipfs"
        env = {"IPFS_PATH": str(repo)}
        if not (repo / "config").is_file():
            repo.mkdir(parents=True, exist_ok=True)
            self._run([str(ipfs), "init", "--profile", "test"], env)
        for key, value in (
            ("Addresses.API", json.dumps(f"/ip4/{self.cfg.host}/tcp/{self.cfg.ipfs_api_port}")),
            ("Addresses.Gateway", json.dumps(f"/ip4/{self.cfg.host}/tcp/{self.cfg.ipfs_gateway_port}")),
            ("Addresses.Swarm", "[]"),
        ):
            self._run([str(ipfs), "config", "--json", key, value], env)
        self._require_port(self.cfg.ipfs_api_port, "the Kubo RPC API")
        self._require_port(self.cfg.ipfs_gateway_port, "the Kubo gateway")
        pid = self._spawn("kubo", [str(ipfs), "daemon", "--offline"], cwd=self.cfg.dir, env=env)
        self._wait("kubo", lambda: KuboBlobStore(self.cfg.ipfs_api, timeout=2).version(), pid)
        return pid

    @staticmethod
    def _run(argv: list[str], env: dict[str, str]) -> None:
        result = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise DevnetError(f"{' '.join(argv)} failed: {result.stderr.strip() or result.stdout.strip()}")

    # ------------------------------------------------------------------- commands

    def up(self, *, external: bool = False) -> Manifest:
        """Start (or reuse) the node and the daemon, then deploy unless the manifest's contracts are live.
        ``external``: start nothing, deploy onto a node and daemon already listening on the configured ports
        (docker compose, or anything else)."""
        self.cfg.dir.mkdir(parents=True, exist_ok=True)
        if external:
            KuboBlobStore(self.cfg.ipfs_api, timeout=5).version()
        else:
            self.start_kubo()
            self.start_node()
        transactor = connect_rpc(self.cfg.rpc_url)
        wallets = devnet_wallets(transactor, self.cfg.seed, list(ROLE_LABELS), fund=False)
        current = self._current_manifest(transactor)
        if current is not None:
            return current
        fund_from_node(transactor.w3, list(wallets.values()))
        deployment = deploy_all(
            transactor,
            admin=wallets["admin"],
            operator=wallets["operator"],
            aggregator=wallets["aggregator"],
            stake=replace(default_stake_params(), admission_required=self.cfg.admission),
            network=f"{self.cfg.node}-devnet",
            endpoints={
                "rpc": self.cfg.rpc_url,
                "ipfs_api": self.cfg.ipfs_api,
                "ipfs_gateway": f"http://{self.cfg.host}:{self.cfg.ipfs_gateway_port}",
            },
        )
        deployment.manifest.write(self.cfg.manifest_path)
        return deployment.manifest

    def _current_manifest(self, transactor: Transactor) -> Manifest | None:
        """The existing manifest if its contracts are still deployed on this node, else None."""
        try:
            manifest = Manifest.read(self.cfg.manifest_path)
            manifest.check_chain(transactor.w3)
        except ChainError:
            return None
        if manifest.endpoints.get("rpc") != self.cfg.rpc_url:
            return None
        if "PrivacyLedger" not in manifest.contracts:  # deployed before the privacy ledger (issue 13): redeploy
            return None
        if "admissionRequired" not in manifest.stake:  # a registry from before admission (issue 13): redeploy
            return None
        for address in manifest.contracts.values():
            if len(transactor.w3.eth.get_code(address)) == 0:
                return None
        if bool(manifest.stake["admissionRequired"]) != self.cfg.admission:
            have, want = ("admission", "open") if manifest.stake["admissionRequired"] else ("open", "admission")
            raise DevnetError(f"this devnet's registry is deployed {have} registration, not {want}: "
                              "`fedledger devnet down --wipe` and `up` again to redeploy")
        return manifest

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dir": str(self.cfg.dir), "logs": str(self.logs)}
        for name, entry in self._pids().items():
            out[name] = {"pid": entry["pid"], "running": pid_alive(int(entry["pid"]))}
        try:
            manifest = Manifest.read(self.cfg.manifest_path)
            out["manifest"] = str(self.cfg.manifest_path)
            out["endpoints"] = manifest.endpoints
            out["contracts"] = manifest.contracts
        except ChainError:
            out["manifest"] = None
        try:
            out["chain_id"] = connect_rpc(self.cfg.rpc_url, timeout=2, retries=0).chain_id
        except ChainUnavailable:
            out["chain_id"] = None
        return out

    def down(self, *, wipe: bool = False) -> list[str]:
        stopped = []
        for name, entry in self._pids().items():
            pid = int(entry["pid"])
            if pid_alive(pid):
                _terminate(pid)
                stopped.append(f"{name} (pid {pid})")
        self.pid_file.unlink(missing_ok=True)
        if wipe and self.cfg.dir.exists():
            shutil.rmtree(self.cfg.dir)
        return stopped

    def attach(self) -> tuple[Deployment, KuboBlobStore]:
        manifest = Manifest.read(self.cfg.manifest_path)
        transactor = connect_rpc(manifest.endpoints["rpc"])
        return Deployment.attach(transactor, manifest), KuboBlobStore(manifest.endpoints["ipfs_api"])


def _terminate(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``timeout``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
    try:  # reap if it was our child
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
