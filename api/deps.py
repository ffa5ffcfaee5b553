"""Named dependencies: the platform service and the operator credential."""

from __future__ import annotations

import hmac
import re
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from pydantic import AfterValidator, WithJsonSchema
from eth_utils import to_checksum_address

from api.settings import Settings
from fedledger.service import Platform

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_HEX32 = re.compile(r"^0x[0-9a-fA-F]{64}$")
_SIGNATURE = re.compile(r"^0x[0-9a-fA-F]{130}$")


def _address(value: str) -> str:
    if not _ADDRESS.match(value):
        raise ValueError(f"not an Ethereum address (0x + 40 hex digits): {value!r}")
    return str(to_checksum_address(value))


def _hex32(value: str) -> str:
    if not _HEX32.match(value):
        raise ValueError(f"not a 32-byte hex value (0x + 64 hex digits): {value!r}")
    return value.lower()


def _signature(value: str) -> str:
    if not _SIGNATURE.match(value):
        raise ValueError(f"not a 65-byte signature (0x + 130 hex digits): {value!r}")
    return value


# The schema states the same patterns the validators check (so clients and fuzzers know them); the validators
# keep their own messages, which name the value.
Address = Annotated[str, AfterValidator(_address), WithJsonSchema({"type": "string", "pattern": _ADDRESS.pattern})]
Hex32 = Annotated[str, AfterValidator(_hex32), WithJsonSchema({"type": "string", "pattern": _HEX32.pattern})]
Signature = Annotated[str, AfterValidator(_signature),
                      WithJsonSchema({"type": "string", "pattern": _SIGNATURE.pattern})]


def get_platform(request: Request) -> Platform:
    platform: Platform | None = getattr(request.app.state, "platform", None)
    if platform is None:
        raise HTTPException(status_code=503, detail="the platform is starting")
    return platform


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


PlatformDep = Annotated[Platform, Depends(get_platform)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def require_operator(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """Operator routes need ``Authorization: Bearer <FEDLEDGER_OPERATOR_TOKEN>``."""
    expected = settings.operator_token.get_secret_value()
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
        raise HTTPException(status_code=401, detail="operator credential required: Authorization: Bearer <token>",
                            headers={"WWW-Authenticate": "Bearer"})


OperatorDep = Depends(require_operator)
