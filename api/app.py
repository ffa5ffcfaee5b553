"""The FastAPI application factory.

    fedledger api [--host 127.0.0.1 --port 8000]          # FEDLEDGER_STACK=embedded|devnet, see api/settings.py

Routes are sync functions where they call the chain: FastAPI runs them in its thread pool, so blocking web3
calls never stall the event loop. With ``FEDLEDGER_RELAY_MODE=batched`` a background thread runs the relay's flush
policy (``Platform.flush_due``) every ``FEDLEDGER_FLUSH_INTERVAL_S`` seconds while the app is up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors, openapi
from api.routes import audit, blobs, dashboard, health, models, operator, participants, rounds
from api.settings import Settings
from fedledger.service import Platform

log = logging.getLogger(__name__)


def build_platform(settings: Settings) -> Platform:
    from fedledger.devnet import DevnetConfig
    from fedledger.stack import devnet_stack, embedded_stack

    if settings.stack == "devnet":
        cfg = DevnetConfig(dir=settings.devnet_dir, seed=settings.devnet_seed)
        stack = devnet_stack(cfg)
        index = settings.devnet_dir / "index.sqlite"
    else:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        stack = embedded_stack(settings.state_dir, seed=settings.devnet_seed)
        index = settings.state_dir / "index.sqlite"
    return Platform.create(
        stack, index, confirmations=settings.confirmations, max_upload_bytes=settings.max_upload_bytes,
        settlement=settings.settlement, relay_mode=settings.relay_mode, batch_size=settings.batch_size,
        flush_margin_s=settings.flush_margin_s, queue_path=settings.queue_path(),
    )


class Flusher:
    """The relay's clock inside the API process: ``platform.flush_due()`` every ``interval_s`` seconds."""

    def __init__(self, platform: Platform, interval_s: float) -> None:
        self.platform = platform
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fedledger-relay-flusher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.platform.flush_due()
            except Exception:  # noqa: BLE001 - the flusher must outlive a bad pass; entries stay queued
                log.exception("relay flush pass failed")


def create_app(settings: Settings | None = None, platform: Platform | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "platform", None) is None:
            app.state.platform = build_platform(settings)
        flusher = None
        if app.state.platform.relay_mode == "batched" and settings.flush_interval_s > 0:
            flusher = Flusher(app.state.platform, settings.flush_interval_s)
            flusher.start()
        try:
            yield
        finally:
            if flusher is not None:
                flusher.stop()

    app = FastAPI(
        title="fedledger",
        version="0.1.0",
        description="Federated learning rounds recorded on Ethereum and audited by recomputation.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.platform = platform
    errors.install(app)
    openapi.install(app)
    for module in (health, participants, blobs, rounds, models, audit, operator):
        app.include_router(module.router)
    dashboard.install(app)
    return app
