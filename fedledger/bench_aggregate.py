"""Placeholder: being written (issue 5). `add_arguments(parser)` and `run(args) -> int` are the CLI contract."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", default=None)


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("fedledger bench: not implemented yet")
