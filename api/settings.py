"""API settings from environment variables (prefix FEDLEDGER_), e.g. FEDLEDGER_STACK=devnet."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_OPERATOR_TOKEN = "dev-operator-token"


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

    @model_validator(mode="after")
    def _no_development_secrets_in_production(self) -> Settings:
        if self.environment != "development" and self.operator_token.get_secret_value() == DEV_OPERATOR_TOKEN:
            raise ValueError("FEDLEDGER_OPERATOR_TOKEN must be set to a real secret outside development")
        if self.environment != "development" and self.stack == "embedded":
            raise ValueError("the embedded stack is for development: set FEDLEDGER_STACK=devnet (or a real chain)")
        return self
