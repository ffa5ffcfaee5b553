"""The FastAPI application factory.

    fedledger api [--host 127.0.0.1 --port 8000]          # FEDLEDGER_STACK=embedded|devnet, see api/settings.py

Routes are sync functions where they call the chain: FastAPI runs them in its thread pool, so blocking web3
calls never stall the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors
from api.routes import audit, blobs, health, models, operator, participants, rounds
from api.settings import Settings
from fedledger.service import Platform


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
    return Platform.create(stack, index, confirmations=settings.confirmations, max_upload_bytes=settings.max_upload_bytes)


def create_app(settings: Settings | None = None, platform: Platform | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "platform", None) is None:
            app.state.platform = build_platform(settings)
        yield

    app = FastAPI(
        title="fedledger",
        version="0.1.0",
        description="Federated learning rounds recorded on Ethereum and audited by recomputation.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.platform = platform
    errors.install(app)
    for module in (health, participants, blobs, rounds, models, audit, operator):
        app.include_router(module.router)
    return app
