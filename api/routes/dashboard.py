"""The auditor dashboard: read-only HTML pages over the same ``Platform`` views the JSON routes return.

    GET /                                  -> redirect to /dashboard
    GET /dashboard                         overview: chain, contracts, current model, rounds, minted, last audit
    GET /dashboard/rounds                  every round (and accuracy per round where one was evaluated)
    GET /dashboard/rounds/{id}             one round: committers and verdicts, the rule, the audit (re-run button)
    GET /dashboard/participants/{address}  reputation and rewards over rounds, history
    GET /dashboard/lineage                 the chain of global model hashes
    /dashboard/static/...                  CSS, the page script and the vendored uPlot (api/static/vendor)

Pages are rendered on the server (Jinja2, autoescaped); the page script only draws plots from the JSON embedded in
the page and re-runs an audit through ``GET /audit/rounds/{id}``. No page holds an operator action. Nothing loads
from outside the server (a Content-Security-Policy of 'self' says so to the browser too). Bad round ids and
addresses answer 422, unknown ones 404, as HTML. The pages are not part of the OpenAPI schema.
"""

from __future__ import annotations

import re
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from api.deps import PlatformDep
from fedledger.history import UnknownRound
from fedledger.service import AuditRun, NotFound
from storage import StorageError
from trainer.rules import Status

HERE = Path(__file__).resolve().parent.parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
STATIC_DIR = HERE / "static"
TOKEN_DECIMALS = 18  # FedToken (OpenZeppelin ERC20 default)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_ROUND_ID = re.compile(r"^[0-9]{1,18}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")

REASONS = {
    Status.ACCEPTED: "accepted: aggregated and paid by score",
    Status.LOW_SCORE: "rejected: scored below the rule's threshold against the median reference",
    Status.NORM_OUTLIER: "rejected: norm beyond the rule's limit times the median update norm",
    Status.UNAVAILABLE: "rejected: the blob could not be fetched",
    Status.HASH_MISMATCH: "rejected: the bytes do not hash to the commitment",
    Status.BAD_FORMAT: "rejected: not canonical safetensors (dtype, missing or extra tensors)",
    Status.WRONG_SHAPE: "rejected: tensor shapes differ from the base model's",
    Status.NON_FINITE: "rejected: NaN or Inf values",
    Status.FREE_RIDE: "rejected: a copy of a public vector (zero update or the previous global step)",
}

router = APIRouter(include_in_schema=False)


class PageError(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


def tokens(wei: str | int | None) -> str:
    """Token base units as an exact decimal number of tokens (trailing zeros dropped)."""
    if wei is None:
        return ""
    value = Decimal(int(wei)).scaleb(-TOKEN_DECIMALS)
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def short(value: str | None, keep: int = 10) -> str:
    if not value:
        return ""
    return value if len(value) <= 2 * keep + 1 else f"{value[:keep]}…{value[-6:]}"


def reason(status: str | None) -> str:
    if status is None:
        return "no verdict yet"
    try:
        return REASONS[Status[status]]
    except KeyError:
        return f"unknown status {status}"


def clock(unix: float | int | None) -> str:
    return "" if unix is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))


TEMPLATES.env.filters.update(tokens=tokens, short=short, reason=reason, clock=clock)


def _page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    response = TEMPLATES.TemplateResponse(request, template, context, status_code=status)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


def _round_id(text: str) -> int:
    if not _ROUND_ID.match(text) or not 1 <= int(text) < 2**63:
        raise PageError(422, "Not a round number", f"round numbers are integers from 1, not {text[:80]!r}")
    return int(text)


def _address(text: str) -> str:
    if not _ADDRESS.match(text):
        raise PageError(422, "Not an address", f"an Ethereum address is 0x + 40 hex digits, not {text[:80]!r}")
    return str(to_checksum_address(text))


def _audit_json(run: AuditRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {"at": run.at, "round": run.round_id, **run.report.to_json(), "failures": run.report.failure_lines()}


def _total_minted(rounds: list[dict[str, Any]]) -> int:
    return sum(int(r["minted"]) for r in rounds if r["minted"] is not None)


@router.get("/", response_class=RedirectResponse)
def root() -> RedirectResponse:
    return RedirectResponse("/dashboard", status_code=307)


@router.get("/dashboard", response_class=HTMLResponse)
def overview(request: Request, platform: PlatformDep) -> Response:
    health = platform.health()
    try:
        model: dict[str, Any] | None = platform.current_model()
    except NotFound:
        model = None
    rounds = platform.rounds()
    evaluations = platform.evaluations()
    return _page(request, "overview.html", health=health, model=model, rounds=rounds,
                 finalized=sum(1 for r in rounds if r["finalized"]), minted=str(_total_minted(rounds)),
                 audit=_audit_json(platform.last_audit), evaluations=evaluations,
                 plot={"accuracy": _accuracy_series(evaluations)})


def _accuracy_series(evaluations: dict[int, dict[str, Any]]) -> dict[str, list[float]] | None:
    if not evaluations:
        return None
    ids = sorted(evaluations)
    return {"round": ids, "accuracy": [evaluations[r]["accuracy"] for r in ids]}


@router.get("/dashboard/rounds", response_class=HTMLResponse)
def rounds_page(request: Request, platform: PlatformDep) -> Response:
    rounds = platform.rounds()
    evaluations = platform.evaluations()
    return _page(request, "rounds.html", rounds=rounds, evaluations=evaluations,
                 plot={"accuracy": _accuracy_series(evaluations)})


@router.get("/dashboard/rounds/{round_id}", response_class=HTMLResponse)
def round_page(request: Request, round_id: str, platform: PlatformDep) -> Response:
    rid = _round_id(round_id)
    try:
        view = platform.round(round_id=rid)
    except UnknownRound as exc:
        raise PageError(404, "Unknown round", str(exc)) from exc
    except StorageError as exc:  # e.g. the round's rule document no longer matches its committed hash
        raise PageError(422, f"Round {rid} cannot be shown", f"a blob the round names is unusable: {exc}") from exc
    audit = None
    if view["state"] == "finalized":
        audit = _audit_json(AuditRun(time.time(), rid, platform.audit(round_id=rid)))
    # the rule's reason for each verdict as the audit re-derived it (copies and redundancy groups share a score)
    recomputed = {v["participant"]: v for r in (audit or {}).get("rounds", []) for v in r["verdicts"]}
    rule = {k: v for k, v in view["rule"].items() if k not in ("hash", "cid")}
    return _page(request, "round.html", round=view, rule=rule, audit=audit, recomputed=recomputed,
                 evaluation=platform.evaluations().get(rid))


@router.get("/dashboard/participants/{address}", response_class=HTMLResponse)
def participant_page(request: Request, address: str, platform: PlatformDep) -> Response:
    checksummed = _address(address)
    view = platform.participant(address=checksummed)
    if view["status"] == "none" and not view["rounds"]:
        raise PageError(404, "Unknown participant", f"{checksummed} never registered and never committed")
    finished = [r for r in view["rounds"] if r["reputation_after"] is not None]
    plot = {"round": [r["round"] for r in finished],
            "reputation": [r["reputation_after"] for r in finished],
            "reward": [float(tokens(r["reward"])) for r in finished]}
    privacy = platform.privacy(address=checksummed) if platform.d.privacy is not None else None
    return _page(request, "participant.html", p=view, plot=plot,
                 earned=str(sum(int(r["reward"]) for r in finished)), privacy=privacy)


@router.get("/dashboard/lineage", response_class=HTMLResponse)
def lineage_page(request: Request, platform: PlatformDep) -> Response:
    models = platform.lineage()
    for previous, model in zip(models, models[1:]):
        model["links"] = model["base_model_hash"] == previous["model_hash"]
    evaluations = platform.evaluations()
    return _page(request, "lineage.html", models=models, evaluations=evaluations)


def install(app: FastAPI) -> None:
    """The pages, their static files and HTML error pages for them (JSON routes keep their JSON errors)."""

    @app.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError) -> Response:
        return _page(request, "error.html", status=exc.status, title=exc.title, detail=exc.detail,
                     code=exc.status)

    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
