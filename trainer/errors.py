"""Typed errors of the trainer side."""

from __future__ import annotations

from trainer.rules import Status


class TrainerError(Exception):
    """Root of trainer errors."""


class UpdateRejected(TrainerError):
    """An update failed validation. ``status`` is the rejection code recorded on-chain."""

    def __init__(self, status: Status, detail: str) -> None:
        super().__init__(f"{status.name}: {detail}")
        self.status = status
        self.detail = detail


class RuleError(TrainerError):
    """A rule's parameters are impossible or unknown."""
