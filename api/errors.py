"""Domain errors -> HTTP answers. Nothing below api/ raises HTTPException; this is the only mapping."""

from __future__ import annotations

import re
import sqlite3
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from chain.errors import ChainError, ChainUnavailable, ContractRevert, ManifestError, TransactionTimeout
from fedledger.history import UnknownRound
from fedledger.privacy import PrivacyBudgetExceeded, PrivacyLedgerUnavailable
from fedledger.service import (
    AlreadyClaimed,
    DeadlinePassed,
    DuplicateCommitment,
    InvalidSignature,
    NotFound,
    NothingToClaim,
    ParticipantNotActive,
    RelayFailed,
    RelayNotBatched,
    ResultsNotCommitted,
    RoundNotOpen,
    SponsorFundsExhausted,
    StakeInsufficient,
)
from storage import BlobIntegrityError, BlobNotFound, StorageError, StorageUnavailable
from trainer.errors import RuleError, UpdateRejected
from trainer.privacy import PrivacyError

REVERT_STATUS = {
    "RoundsUnknownRound": 404,
    "RoundsInvalidSignature": 400,
    "RegistryInvalidSignature": 400,
    "RegistrySignatureExpired": 400,
    "RoundsEmptyHash": 400,
    "RoundsEmptyCid": 400,
    "RoundsParticipantNotActive": 403,
    "AccessControlUnauthorizedAccount": 403,
    "RoundsDeadlinePassed": 409,
    "RoundsRoundNotOpen": 409,
    "RoundsDuplicateCommitment": 409,
    "RegistryAlreadyRegistered": 409,
    "RegistryAlreadySuspended": 409,
    "RegistryNotRegistered": 404,
    "RoundsPreviousRoundNotFinalized": 409,
    "RoundsSubmissionsStillOpen": 409,
    "RoundsAlreadyFinalized": 409,
    "RoundsNoGenesisModel": 409,
    "RoundsGenesisAlreadyPublished": 409,
    "RoundsDeadlineNotInFuture": 400,
    "RoundsDecayOutOfRange": 400,
    "RoundsEmptyRoot": 400,
    "RoundsBatchSizeOutOfRange": 400,
    "RoundsUnknownBatch": 404,
    "RoundsAlreadyClaimed": 409,
    "RoundsInvalidProof": 422,
    "RoundsResultsNotCommitted": 409,
    "RoundsNoClaims": 404,
    "RoundsClaimsExceedTotal": 409,
    "RoundsRewardsExceedBudget": 409,
    "RoundsResultsMissDirectCommitments": 409,
    "RoundsAcceptedExceedEntries": 409,
    "RegistryStaleReputation": 409,
    "RegistryStakeTooLow": 403,  # committing (or registering) with less than the minimum stake
    "RegistryWithdrawalPending": 403,
    "RegistryWithdrawalLocked": 409,
    "RegistryRoundNotSettled": 409,
    "RegistryWithdrawalNotRequested": 409,
    "RegistryNothingToWithdraw": 409,
    "RegistryZeroDeposit": 400,
    "RegistryAlreadySlashed": 409,
    "RegistryNotAdmitted": 403,  # a consortium's registry: no operator admitted this account
    "RegistryAlreadyAdmitted": 409,
    "RegistryAdmissionNotRequired": 409,  # admitting on an open registry
    "RoundsNotSlashable": 409,
    "PrivacyBudgetExceeded": 409,
    "PrivacyDeltaExhausted": 409,
    "PrivacyDuplicateRecord": 409,
    "PrivacyUnknownRound": 404,
    "PrivacyEpsilonOutOfRange": 400,
    "PrivacyDeltaOutOfRange": 400,
}

# Typed errors of fedledger.service (and below) -> (status, error name in the answer).
DOMAIN_STATUS: dict[type[Exception], tuple[int, str]] = {
    DuplicateCommitment: (409, "DuplicateCommitment"),
    RoundNotOpen: (409, "RoundNotOpen"),
    ParticipantNotActive: (403, "ParticipantNotActive"),
    StakeInsufficient: (403, "StakeInsufficient"),
    SponsorFundsExhausted: (503, "SponsorFundsExhausted"),
    RelayNotBatched: (409, "RelayNotBatched"),
    NothingToClaim: (404, "NothingToClaim"),
    AlreadyClaimed: (409, "AlreadyClaimed"),
    ResultsNotCommitted: (409, "ResultsNotCommitted"),
}


def _answer(status: int, error: str, detail: str, **extra: object) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, "detail": detail, **extra})


def install(app: FastAPI) -> None:
    @app.exception_handler(ContractRevert)
    async def _revert(_: Request, exc: ContractRevert) -> JSONResponse:
        args = {k: ("0x" + v.hex() if isinstance(v, bytes) else v) for k, v in exc.args_by_name.items()}
        return _answer(REVERT_STATUS.get(exc.error, 409), exc.error, str(exc), args=args)

    for kind, (status, name) in DOMAIN_STATUS.items():
        async def _domain(_: Request, exc: Exception, status: int = status, name: str = name) -> JSONResponse:
            return _answer(status, name, str(exc))

        app.add_exception_handler(kind, _domain)  # type: ignore[arg-type]

    @app.exception_handler(PrivacyBudgetExceeded)
    async def _budget(_: Request, exc: PrivacyBudgetExceeded) -> JSONResponse:
        return _answer(409, "PrivacyBudgetExceeded", str(exc), **exc.to_json())

    @app.exception_handler(PrivacyLedgerUnavailable)
    async def _no_ledger(_: Request, exc: PrivacyLedgerUnavailable) -> JSONResponse:
        return _answer(404, "PrivacyLedgerUnavailable", str(exc))

    @app.exception_handler(PrivacyError)
    async def _mechanism(_: Request, exc: PrivacyError) -> JSONResponse:
        return _answer(422, "BadPrivacyMechanism", str(exc))

    @app.exception_handler(RelayFailed)
    async def _relay(_: Request, exc: RelayFailed) -> JSONResponse:
        return _answer(409, "RelayFailed", str(exc), cause=exc.cause, kept_pending=exc.kept)

    @app.exception_handler(sqlite3.Error)
    async def _queue_db(_: Request, exc: sqlite3.Error) -> JSONResponse:
        return _answer(503, "StateDatabaseUnavailable", f"a local state database failed: {exc}")

    @app.exception_handler(UnknownRound)
    async def _unknown_round(_: Request, exc: UnknownRound) -> JSONResponse:
        return _answer(404, "UnknownRound", str(exc))

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _answer(404, "NotFound", str(exc))

    @app.exception_handler(BlobNotFound)
    async def _blob_not_found(_: Request, exc: BlobNotFound) -> JSONResponse:
        return _answer(404, "BlobNotFound", str(exc))

    @app.exception_handler(BlobIntegrityError)
    async def _integrity(_: Request, exc: BlobIntegrityError) -> JSONResponse:
        return _answer(422, "BlobIntegrityError", str(exc))

    @app.exception_handler(UpdateRejected)
    async def _rejected(_: Request, exc: UpdateRejected) -> JSONResponse:
        return _answer(422, exc.status.name, exc.detail)

    @app.exception_handler(InvalidSignature)
    async def _signature(_: Request, exc: InvalidSignature) -> JSONResponse:
        return _answer(400, "InvalidSignature", str(exc))

    @app.exception_handler(DeadlinePassed)
    async def _late(_: Request, exc: DeadlinePassed) -> JSONResponse:
        return _answer(409, "DeadlinePassed", str(exc))

    @app.exception_handler(ValueError)
    async def _value(_: Request, exc: ValueError) -> JSONResponse:
        return _answer(400, "BadRequest", str(exc))

    @app.exception_handler(RuleError)
    async def _rule(_: Request, exc: RuleError) -> JSONResponse:
        return _answer(400, "RuleError", str(exc))

    @app.exception_handler(StorageUnavailable)
    async def _storage_down(_: Request, exc: StorageUnavailable) -> JSONResponse:
        return _answer(503, "StorageUnavailable", str(exc))

    @app.exception_handler(ChainUnavailable)
    async def _chain_down(_: Request, exc: ChainUnavailable) -> JSONResponse:
        return _answer(503, "ChainUnavailable", str(exc))

    @app.exception_handler(TransactionTimeout)
    async def _timeout(_: Request, exc: TransactionTimeout) -> JSONResponse:
        return _answer(504, "TransactionTimeout", str(exc))

    @app.exception_handler(StorageError)
    async def _storage(_: Request, exc: StorageError) -> JSONResponse:
        return _answer(400, "StorageError", str(exc))

    @app.exception_handler(ManifestError)
    async def _manifest(_: Request, exc: ManifestError) -> JSONResponse:
        return _answer(503, "ManifestError", str(exc))

    @app.exception_handler(ChainError)
    async def _chain(_: Request, exc: ChainError) -> JSONResponse:
        return _answer(502, "ChainError", str(exc))

    def paths_matching(path: str) -> list[tuple[str, set[str]]]:
        """The documented path templates ``path`` fits, with their methods (from the OpenAPI document, the public
        statement of what the API serves)."""
        out = []
        for template, item in app.openapi()["paths"].items():
            pattern = "^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$"
            if re.match(pattern, path):
                out.append((template, {m.upper() for m in item}))
        return out

    def allowed_methods(request: Request) -> set[str]:
        """A literal path (``/participants/register``) is that route's, though a template would fit it too."""
        matching = paths_matching(request.url.path)
        literal = [(t, methods) for t, methods in matching if "{" not in t]
        return {m for _, methods in (literal or matching) for m in methods}

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        """``GET /participants/register`` reaches ``GET /participants/{address}`` and fails there as a bad address;
        the path is a literal one whose method is POST, so the right answer is 405."""
        matching = paths_matching(request.url.path)
        if any("{" not in t and request.method not in methods for t, methods in matching):
            return JSONResponse(status_code=405, content={"error": "MethodNotAllowed", "detail": "Method Not Allowed"},
                                headers={"Allow": ", ".join(sorted(allowed_methods(request)))})
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """The framework's own answers (401, 404 of an unknown path, 405, 413, 415) in the same error shape. A 405
        names every method the path has: Starlette's router would name only those of the first route that matched
        the path, and GET and POST of one path are two routes here."""
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(sorted(allowed_methods(request)))
        try:
            name = HTTPStatus(exc.status_code).phrase.replace(" ", "")
        except ValueError:
            name = "HTTPError"
        return JSONResponse(status_code=exc.status_code, content={"error": name, "detail": exc.detail}, headers=headers)
