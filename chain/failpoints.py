"""Named crash points, for recovery tests: with ``FEDLEDGER_FAILPOINT=<name>`` in its environment a process kills
itself with SIGKILL when it reaches ``failpoint(<name>)`` — no cleanup, no flush, as a power cut or the OOM killer
would. Without the variable a failpoint is one dictionary lookup.

Names in use (tests/integration/test_crash_recovery.py kills the aggregator at each):
    aggregator:after-fetch       the round's blobs are fetched and evaluated, nothing stored
    aggregator:after-store       the new model (and a Merkle round's result list) is in the blob store
    tx:before-send:<function>    the transaction is signed, not broadcast
    tx:after-send:<function>     broadcast, its receipt not yet read
    aggregator:after-receipt     the finalize transaction is mined, the aggregator has not reported it
"""

from __future__ import annotations

import os
import signal

ENV = "FEDLEDGER_FAILPOINT"


def failpoint(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
