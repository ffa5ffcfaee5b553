"""Subcommands that need the full stack (demo, audit). Filled in below."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    pass
