"""Helpers shared by the contract tests of tests/chain/."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest

from chain.errors import ContractRevert

Reverts = Callable[..., AbstractContextManager[pytest.ExceptionInfo[ContractRevert]]]


@contextmanager
def _reverts(error: str, **args: Any) -> Iterator[pytest.ExceptionInfo[ContractRevert]]:
    """The block must revert with custom error ``error`` carrying exactly ``args`` (all of them, by name)."""
    with pytest.raises(ContractRevert) as info:
        yield info
    assert (info.value.error, info.value.args_by_name) == (error, args)


@pytest.fixture
def reverts() -> Reverts:
    """``with reverts("RoundsEmptyCid"): ...`` / ``with reverts("RoundsUnknownRound", roundId=5, roundCount=1): ...``"""
    return _reverts
