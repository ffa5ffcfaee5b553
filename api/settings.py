"""API settings from environment variables (prefix FEDLEDGER_), e.g. FEDLEDGER_STACK=devnet.

Settlement and relay (docs/merkle-rounds.md; flush policy in fedledger/service.py):

    FEDLEDGER_SETTLEMENT=legacy|merkle     legacy: finalize per participant; merkle: one results root, claims by proof
    FEDLEDGER_RELAY_MODE=direct|batched    direct: one commitUpdateSigned per submission; batched (merkle only): queue
                                           signed commitments durably, post one root per batch (commitBatch)
    FEDLEDGER_BATCH_SIZE=500               post a batch once this many are pending (<= 10,000, the contract's cap)
    FEDLEDGER_FLUSH_MARGIN_S=60            post whatever is pending once a round's deadline is this close
    FEDLEDGER_FLUSH_INTERVAL_S=5           how often the API's background flusher checks (0: off; the aggregator
                                           service, the close route and POST /operator/rounds/{id}/flush still flush)
    FEDLEDGER_RELAY_QUEUE=PATH             the queue's SQLite file (default: relay-queue.sqlite in the state dir on
                                           the embedded stack, beside the devnet manifest on the devnet)

Local training the operator announces (GET /health ``local_training``; ``fedledger participant train --api URL``
follows it unless given ``--local-steps``): the platform judges updates, it cannot see how they were trained.

    FEDLEDGER_LOCAL_STEPS=epochs|S|epochs:S   2 epochs of each participant's data (default), S SGD steps, or 2 epochs
                                           capped at S steps (S: the median participant's step count)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainer.local import parse_local_steps

DEV_OPERATOR_TOKEN = "dev-operator-token"
MAX_BATCH_ENTRIES = 10_000  # FederatedRounds.MAX_BATCH_ENTRIES


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEDLEDGER_")

    environment: Literal["development", "production"] = "development"
    stack: Literal["embedded", "devnet"] = "embedded"  # embedded: a fresh in-process chain per server process
    state_dir: Path = Path(".fedledger/api")  # embedded blobs, the event index of the embedded stack
    devnet_dir: Path = Path(".fedledger/devnet")  # manifest (and index) of the devnet stack
    devnet_seed: int = 0  # derives the devnet operator/aggregator keys (devnet only)
    operator_token: SecretStr = SecretStr(DEV_OPERATOR_TOKEN)  # bearer credential for /operator routes
    max_upload_bytes: int = 16 * 1024 * 1024
    confirmations: int = 0  # blocks behind head the event index stays
    host: str = "127.0.0.1"
    port: int = 8000
    settlement: Literal["legacy", "merkle"] = "legacy"  # legacy keeps per-participant finalization (the demo's)
    relay_mode: Literal["direct", "batched"] = "direct"  # batched needs settlement=merkle
    batch_size: int = Field(default=500, ge=1, le=MAX_BATCH_ENTRIES)  # a batch of 500 is ~125 kB of signed list
    flush_margin_s: int = Field(default=60, ge=0, le=30 * 24 * 3600)  # post pending entries this long before a deadline
    flush_interval_s: float = Field(default=5.0, ge=0, le=3600)  # background flusher period; 0 turns it off
    relay_queue: Path | None = None  # default: relay-queue.sqlite in the state (embedded) or devnet directory
    local_steps: str = "epochs"  # announced local training: epochs | S | epochs:S (trainer.local.parse_local_steps)

    @field_validator("local_steps")
    @classmethod
    def _local_steps_parse(cls, value: str) -> str:
        parsed = parse_local_steps(value)  # ValueError names the problem
        return "epochs" if parsed is None else str(parsed)

    @model_validator(mode="after")
    def _no_development_secrets_in_production(self) -> Settings:
        if self.environment != "development" and self.operator_token.get_secret_value() == DEV_OPERATOR_TOKEN:
            raise ValueError("FEDLEDGER_OPERATOR_TOKEN must be set to a real secret outside development")
        if self.environment != "development" and self.stack == "embedded":
            raise ValueError("the embedded stack is for development: set FEDLEDGER_STACK=devnet (or a real chain)")
        return self

    @model_validator(mode="after")
    def _relay_fits_settlement(self) -> Settings:
        if self.relay_mode == "batched" and self.settlement != "merkle":
            raise ValueError("FEDLEDGER_RELAY_MODE=batched needs FEDLEDGER_SETTLEMENT=merkle: legacy finalization "
                             "counts only direct commitments and would ignore every batch")
        if self.relay_mode == "batched" and 0 < self.flush_interval_s and self.flush_margin_s <= self.flush_interval_s:
            raise ValueError(f"FEDLEDGER_FLUSH_MARGIN_S ({self.flush_margin_s}) must exceed FEDLEDGER_FLUSH_INTERVAL_S "
                             f"({self.flush_interval_s}), or a deadline can pass between two flusher passes")
        return self

    def queue_path(self) -> Path:
        if self.relay_queue is not None:
            return self.relay_queue
        return (self.devnet_dir if self.stack == "devnet" else self.state_dir) / "relay-queue.sqlite"
