"""The dashboard under a real browser: `fedledger demo --serve` (a few rounds on the embedded stack, then uvicorn on
a free loopback port in the same process) and Debian's chromium driven by Playwright (no browser download:
scripts/bootstrap installs /usr/bin/chromium)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from fedledger.devnet import _terminate, free_port

CHROMIUM = Path("/usr/bin/chromium")
# Screenshots go to a temp dir, so test runs leave the checkout as it was; refresh the committed ones with
# FEDLEDGER_SCREENSHOTS_DIR=docs/screenshots .venv/bin/python -m pytest tests/dashboard
SCREENSHOTS = Path(os.environ.get("FEDLEDGER_SCREENSHOTS_DIR") or tempfile.mkdtemp(prefix="fedledger-screenshots-"))
DEMO = ["--participants", "6", "--byzantine", "2", "--rounds", "3", "--no-clean-reference"]

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")


@dataclass
class Served:
    url: str
    state_dir: Path
    http: httpx.Client


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(tmp_path_factory, "dashboard-demo", DEMO)


# Honest participants train with DP-SGD (epsilon 8 per round) under an operator budget: the privacy ledger's pages.
DP_DEMO = ["--participants", "4", "--byzantine", "1", "--rounds", "2", "--no-clean-reference", "--dp-epsilon", "8",
           "--dp-budget", "20"]


@pytest.fixture(scope="session")
def served_dp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(tmp_path_factory, "dashboard-dp-demo", DP_DEMO)


def _serve(tmp_path_factory: pytest.TempPathFactory, name: str, demo: list[str]) -> Iterator[Served]:
    state = tmp_path_factory.mktemp(name)
    port = free_port()
    log = open(state / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedledger.cli", "demo", *demo, "--state-dir", str(state), "--serve",
         "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, timeout=120)
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"demo --serve exited {proc.returncode}: {(state / 'serve.log').read_text()[-3000:]}")
            try:
                if http.get("/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"demo --serve did not answer: {(state / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield Served(url, state, http)
    finally:
        http.close()
        _terminate(proc.pid)
        log.close()


@dataclass
class Browser:
    page: object  # playwright.sync_api.Page
    origin: str
    requests: list[str] = field(default_factory=list)

    def open(self, path: str) -> object:
        response = self.page.goto(self.origin + path)  # type: ignore[attr-defined]
        self.page.wait_for_load_state("networkidle")  # type: ignore[attr-defined]
        return response

    def foreign_requests(self) -> list[str]:
        """Every request the pages made that did not go to the dashboard's own loopback server."""
        own = urlsplit(self.origin)
        return [u for u in self.requests if (urlsplit(u).scheme, urlsplit(u).netloc) != (own.scheme, own.netloc)
                and not u.startswith("data:")]

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
        return path


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/bootstrap (it installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # chromium refuses its sandbox as root
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_for(chromium: object) -> Iterator[Callable[[str], Browser]]:
    """``browser_for(origin)``: a fresh page that records every request; fails the test if a page script raised."""
    contexts: list[object] = []
    errors: list[str] = []

    def open_(origin: str) -> Browser:
        context = chromium.new_context(viewport={"width": 1300, "height": 900})  # type: ignore[attr-defined]
        contexts.append(context)
        page = context.new_page()
        b = Browser(page, origin)
        page.on("request", lambda request: b.requests.append(request.url))
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return b

    try:
        yield open_
        assert not errors, f"the page script raised: {errors}"
    finally:
        for context in contexts:
            context.close()  # type: ignore[attr-defined]


@pytest.fixture
def browser(browser_for: Callable[[str], Browser], served: Served) -> Browser:
    return browser_for(served.url)
