from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from hexbytes import HexBytes
from starlette.concurrency import run_in_threadpool

from api.deps import Hex32, PlatformDep

router = APIRouter(prefix="/blobs", tags=["blobs"])

MEDIA_TYPE = "application/octet-stream"


@router.post(
    "",
    status_code=201,
    summary="Upload an update (safetensors, float32, the current model's shapes); returns its hash and CID",
    openapi_extra={"requestBody": {"content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
                                   "required": True}},
)
async def upload(request: Request, platform: PlatformDep) -> dict[str, Any]:
    # Content-Type and Content-Length are read here, not declared as parameters: they are the HTTP framing of the
    # body, which the server (h11/httptools) already checked, not inputs a client should vary.
    content_type = request.headers.get("content-type")
    if (content_type or "").split(";")[0].strip().lower() != MEDIA_TYPE:
        raise HTTPException(status_code=415, detail=f"send the safetensors bytes as {MEDIA_TYPE}, not {content_type!r}")
    limit = platform.max_upload_bytes
    declared = request.headers.get("content-length", "")
    content_length = int(declared) if declared.isdigit() else None
    if content_length is not None and content_length > limit:
        raise HTTPException(status_code=413, detail=f"upload of {content_length} bytes exceeds the limit of {limit}")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise HTTPException(status_code=413, detail=f"upload exceeds the limit of {limit} bytes")

    ref = await run_in_threadpool(lambda: platform.upload_update(data=bytes(data)))
    return {"content_hash": "0x" + ref.content_hash.hex(), "cid": ref.uri, "size": len(data)}


@router.get("/{cid}", summary="Download a blob; the server checks it against the content hash you expect",
            response_class=Response, responses={200: {"content": {MEDIA_TYPE: {}}}})
def download(cid: str, content_hash: Annotated[Hex32, Query()], platform: PlatformDep) -> Response:
    return Response(platform.blob(uri=cid, content_hash=bytes(HexBytes(content_hash))), media_type=MEDIA_TYPE)


