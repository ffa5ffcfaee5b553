"""The ``fedledger`` command line.

    fedledger demo [--participants N --byzantine K --attack signflip|noise --rounds R ...]
    fedledger audit verify --state DIR [--round N]
    fedledger compile [--if-stale]
    fedledger codegen
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def _cmd_compile(args: argparse.Namespace) -> int:
    from chain.compiler import ARTIFACTS_DIR, CONTRACT_NAMES, compile_contracts, load_artifact, write_artifacts
    from chain.errors import ArtifactError

    if args.if_stale:
        try:
            for name in CONTRACT_NAMES:
                load_artifact(name)
            return 0
        except ArtifactError:
            pass
    paths = write_artifacts(compile_contracts())
    print(f"compiled {len(paths)} contracts into {ARTIFACTS_DIR}")
    return 0


def _cmd_codegen(args: argparse.Namespace) -> int:
    from chain.codegen import generate

    for path in generate():
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedledger", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile contracts/ into chain/artifacts (offline)")
    p.add_argument("--if-stale", action="store_true", help="only when artifacts are missing or contracts/ changed")
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser("codegen", help="regenerate the typed gateways in chain/gateways from the artifacts")
    p.set_defaults(func=_cmd_codegen)

    from fedledger import commands

    commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from chain.errors import ChainError
    from storage import StorageError
    from trainer.errors import TrainerError

    try:
        return int(args.func(args))
    except (ChainError, StorageError, TrainerError, ValueError) as exc:
        if args.verbose:
            raise
        print(f"fedledger {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
