"""Run a Flower ServerApp and ClientApp in one process: Flower's simulation without its Ray backend.

flwr 1.42's Simulation Runtime (``flwr run`` on a local simulation federation, ``flwr.simulation.run_simulation``)
executes ClientApps on Ray, which ``flwr[simulation]`` brings and this project's lock does not hold. ``LocalGrid``
is a ``flwr.serverapp.Grid`` that delivers each instruction to the ClientApp of its node, in this process and one
after another, with that node's ``Context`` (node config, persistent state). The ServerApp, strategy and ClientApp
are the same objects the deployment runtime runs (SuperLink + SuperNodes); only the transport differs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run, RunStatus
from flwr.supercore.task_identity import TaskIdentity

CLIENT_EXCEPTION = 1  # the Error code of a reply whose ClientApp raised


class LocalGrid(Grid):
    def __init__(self, client_app: ClientApp, node_configs: list[Mapping[str, Any]], run_config: Mapping[str, Any],
                 *, run_id: int = 1) -> None:
        self.client_app = client_app
        self._run = Run(run_id, "fedledger/local", "0", "", dict(run_config), "", "", "", "",
                        RunStatus("running", "", ""), "", "", None, 0, 0, 0.0)
        self.contexts = {
            1000 + i: Context(run_id, 1000 + i, dict(cfg), RecordDict(), dict(run_config))
            for i, cfg in enumerate(node_configs)
        }
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            if msg.metadata.dst_node_id not in self.contexts:
                raise ValueError(f"no node {msg.metadata.dst_node_id} in this grid")
            msg.metadata.__dict__["_message_id"] = str(uuid4())
            self._replies[msg.metadata.message_id] = self._deliver(msg)
            ids.append(msg.metadata.message_id)
        return ids

    def _deliver(self, msg: Message) -> Message:
        context = self.contexts[msg.metadata.dst_node_id]
        # A ClientApp may change what it receives; a real transport hands it its own copy.
        instruction = Message(RecordDict(dict(msg.content)), msg.metadata.dst_node_id, msg.metadata.message_type,
                              group_id=msg.metadata.group_id)
        instruction.metadata.__dict__.update(
            {"_message_id": msg.metadata.message_id, "_src_node_id": SUPERLINK_NODE_ID}
        )
        try:
            return self.client_app(instruction, context)
        except Exception as exc:  # a failing ClientApp is an error reply, as the SuperNode would send
            return Message(Error(CLIENT_EXCEPTION, f"{type(exc).__name__}: {exc}"), reply_to=instruction)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(m) for m in message_ids if m in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return list(self.pull_messages(self.push_messages(messages)))


def run_local(server_app: ServerApp, client_app: ClientApp, node_configs: list[Mapping[str, Any]],
              run_config: Mapping[str, Any]) -> float:
    """Run ``server_app`` against one in-process node per entry of ``node_configs``; returns wall seconds."""
    grid = LocalGrid(client_app, node_configs, run_config)
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = grid.run.run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    started = time.perf_counter()
    server_app(grid, Context(grid.run.run_id, SUPERLINK_NODE_ID, {}, RecordDict(), dict(run_config)))
    return time.perf_counter() - started
