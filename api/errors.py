"""Domain errors -> HTTP answers. Nothing below api/ raises HTTPException; this is the only mapping."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from chain.errors import ChainError, ChainUnavailable, ContractRevert, ManifestError, TransactionTimeout
from fedledger.history import UnknownRound
from fedledger.service import DeadlinePassed, InvalidSignature, NotFound
from storage import BlobIntegrityError, BlobNotFound, StorageError, StorageUnavailable
from trainer.errors import RuleError, UpdateRejected

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
}


def _answer(status: int, error: str, detail: str, **extra: object) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, "detail": detail, **extra})


def install(app: FastAPI) -> None:
    @app.exception_handler(ContractRevert)
    async def _revert(_: Request, exc: ContractRevert) -> JSONResponse:
        args = {k: ("0x" + v.hex() if isinstance(v, bytes) else v) for k, v in exc.args_by_name.items()}
        return _answer(REVERT_STATUS.get(exc.error, 409), exc.error, str(exc), args=args)

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
