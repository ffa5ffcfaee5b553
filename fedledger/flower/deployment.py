"""Flower's deployment runtime on loopback: one SuperLink, N SuperNodes, `flwr run` — each its own process.

Insecure mode (no TLS) on 127.0.0.1 only: for tests and benches on one machine. Every process is started in its
own session and stopped by its pid (its process group: SuperLink and SuperNodes spawn SuperExec, ServerApp and
ClientApp processes of their own). ``FLWR_HOME`` is a directory of this deployment, so no user file is touched.

The Flower commands run on this interpreter (``sys.executable``): small shims in ``<work>/bin`` call the entry
points flwr declares, so the SuperExec / ServerApp / ClientApp processes that Flower starts by name import the
same flwr and fedledger as the caller, whatever other Flower installation ``PATH`` holds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import distribution
from pathlib import Path
from typing import IO, Any

from fedledger.devnet import _terminate, free_port, pid_alive

FLOWER_COMMANDS = ("flwr", "flower-superlink", "flower-supernode", "flower-superexec", "flwr-serverapp",
                   "flwr-clientapp")
CONNECTION = "fedledger-loopback"


class FlowerRuntimeError(RuntimeError):
    """A Flower process failed to start or a run failed; the message names the log to read."""


def write_shims(bin_dir: Path) -> Path:
    """One executable per Flower command, running flwr's declared entry point on this interpreter."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    points = {ep.name: ep for ep in distribution("flwr").entry_points if ep.group == "console_scripts"}
    for name in FLOWER_COMMANDS:
        ep = points[name]
        module, _, attr = ep.value.partition(":")
        code = f"import sys; sys.argv[0] = {name!r}; from {module} import {attr} as main; sys.exit(main())"
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {sys.executable} -c "{code}" "$@"\n')
        shim.chmod(0o755)
    return bin_dir


def node_config_arg(config: dict[str, Any]) -> str:
    """``--node-config`` syntax: space-separated key=value, strings quoted (TOML values)."""
    return " ".join(f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}" for k, v in config.items())


@dataclass
class LoopbackFlower:
    work: Path
    superlink_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.home = self.work / "flwr-home"
        self.home.mkdir(exist_ok=True)
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.superlink_port}"\ninsecure = true\n'
        )
        self.bin = write_shims(self.work / "bin")
        self.env = {**os.environ, "FLWR_HOME": str(self.home), "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
                    "FLWR_TELEMETRY_ENABLED": "0", "PYTHONUNBUFFERED": "1"}

    @property
    def superlink(self) -> str:
        return f"127.0.0.1:{self.superlink_port}"

    def log_path(self, name: str) -> Path:
        return self.work / f"{name}.log"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = self.log_path(name).open("ab")
        self._logs.append(log)
        proc = subprocess.Popen([str(self.bin / args[0]), *args[1:]], env=self.env, cwd=self.work, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_superlink(self) -> None:
        self._spawn("superlink", ["flower-superlink", "--insecure", "--host", "127.0.0.1", "--port",
                                  str(self.superlink_port), "--disable-runtime-dependency-installation"])
        self._wait_for(lambda: _port_open(self.superlink_port), "superlink")

    def start_supernode(self, name: str, node_config: dict[str, Any]) -> None:
        self._spawn(name, ["flower-supernode", "--insecure", "--superlink", self.superlink, "--host", "127.0.0.1",
                           "--port", str(free_port()), "--node-config", node_config_arg(node_config)])

    def run(self, app_dir: Path, run_config: dict[str, Any], *, timeout: float = 300.0) -> str:
        """``flwr run APP <loopback connection> --run-config ... --stream``: returns its output once the run ends."""
        overrides = node_config_arg(run_config)
        proc = subprocess.run(
            [str(self.bin / "flwr"), "run", str(app_dir), CONNECTION, "--run-config", overrides, "--stream"],
            env=self.env, cwd=self.work, capture_output=True, text=True, timeout=timeout,
        )
        if proc.returncode != 0:
            raise FlowerRuntimeError(f"flwr run exited {proc.returncode}: {proc.stdout}\n{proc.stderr}")
        return proc.stdout + proc.stderr

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values()]

    def stop(self) -> None:
        """Stop every process this deployment started, by pid (and its process group), newest first; then every
        process Flower started for it in a session of its own (SuperExec, ServerApp, ClientApp: found by this
        deployment's FLWR_HOME in their environment), by pid, once they have had a moment to exit on their own."""
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                _terminate(proc.pid)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        while self.descendants() and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in self.descendants():
            _terminate(pid)
        for log in self._logs:
            log.close()

    def descendants(self) -> list[int]:
        """Live processes (other than those in ``procs``) whose environment holds this deployment's FLWR_HOME."""
        marker = f"FLWR_HOME={self.home}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in self.pids():
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0") and pid_alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:  # gone, or not ours to read
                continue
        return found

    def alive(self) -> list[int]:
        return [p for p in self.pids() if pid_alive(p)] + self.descendants()

    def _wait_for(self, ready: Any, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise FlowerRuntimeError(f"{name} exited {self.procs[name].returncode}; see {self.log_path(name)}")
            if ready():
                return
            time.sleep(0.2)
        raise FlowerRuntimeError(f"{name} not ready after {timeout:.0f} s; see {self.log_path(name)}")


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
