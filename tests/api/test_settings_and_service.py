from __future__ import annotations

import threading

import pytest
from pydantic import ValidationError

from api.settings import Settings
from chain.embedded import advance_time
from fedledger.service import Platform, wait_loop
from trainer.rules import RuleConfig


def test_development_secrets_are_refused_outside_development() -> None:
    with pytest.raises(ValidationError, match="FEDLEDGER_OPERATOR_TOKEN must be set"):
        Settings(environment="production", stack="devnet")
    with pytest.raises(ValidationError, match="embedded stack is for development"):
        Settings(environment="production", operator_token="s3cret")  # type: ignore[arg-type]
    assert Settings(environment="production", stack="devnet", operator_token="s3cret").stack == "devnet"  # type: ignore[arg-type]


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDLEDGER_MAX_UPLOAD_BYTES", "1234")
    monkeypatch.setenv("FEDLEDGER_STACK", "devnet")
    s = Settings()
    assert (s.max_upload_bytes, s.stack) == (1234, "devnet")


def test_the_aggregator_service_finalizes_a_round_once_its_deadline_passed(platform: Platform) -> None:
    platform.publish_genesis(dataset="digits", seed=0)
    round_id = platform.open_round(duration_s=60, rule=RuleConfig())["round"]
    wait_loop(platform, interval_s=0, iterations=2)
    assert platform.d.rounds.get_round(round_id).state == 1  # still open: nothing due
    advance_time(platform.stack.transactor.w3, 61)
    assert platform.finalize_due() == [round_id]
    assert platform.d.rounds.get_round(round_id).state == 3
    assert platform.finalize_due() == []


def test_the_aggregator_service_stops_between_passes_when_asked(platform: Platform) -> None:
    platform.publish_genesis(dataset="digits", seed=0)
    round_id = platform.open_round(duration_s=60, rule=RuleConfig())["round"]
    advance_time(platform.stack.transactor.w3, 61)
    stop = threading.Event()
    stop.set()
    wait_loop(platform, interval_s=3600, stop=stop)  # returns at once: no pass, no hour of waiting
    assert platform.d.rounds.get_round(round_id).state == 1
    passes = []
    real = platform.finalize_due

    def one_pass_then_stop() -> list[int]:
        passes.append(real())
        threading.Timer(0.2, stop.set).start()  # the signal handler's part, from elsewhere, mid-wait
        return passes[-1]

    stop.clear()
    platform.finalize_due = one_pass_then_stop  # type: ignore[method-assign]
    wait_loop(platform, interval_s=3600, stop=stop)  # the wait ends when the stop is asked, not after the interval
    assert passes == [[round_id]] and platform.d.rounds.get_round(round_id).state == 3
