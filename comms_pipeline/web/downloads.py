"""Stored documents over HTTP: streamed from wherever they are kept, or a presigned S3 link.

The bytes come from :func:`comms_pipeline.pipeline.documents.fetch_document`, which checks them
against the SHA-256 recorded at merge time; a copy that does not match is refused, not served.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import StreamingResponse

from comms_pipeline.core.errors import GatewayError
from comms_pipeline.pipeline.documents import (
    DocumentInfo,
    DocumentRemovedError,
    DocumentUnavailableError,
    UnknownDocumentError,
    extension,
    fetch_document,
    storage_place,
)
from comms_pipeline.web.errors import ApiError, not_found

if TYPE_CHECKING:
    from comms_pipeline.settings.gateways import StorageGateway

CHUNK = 64 * 1024


def _chunks(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        yield bytes(view[start:start + CHUNK])


def document_bytes(request: Request, document_id: int) -> tuple[DocumentInfo, bytes]:
    try:
        return fetch_document(request.app.state.settings, request.app.state.engine, document_id)
    except UnknownDocumentError:
        raise not_found(f"no document {document_id}") from None
    except DocumentRemovedError as exc:
        raise ApiError(410, "document_removed", str(exc)) from None
    except DocumentUnavailableError as exc:
        raise ApiError(409, "document_unavailable", str(exc)) from None
    except GatewayError as exc:
        raise ApiError(502, "storage_unavailable",
                       f"the document store did not answer: {exc.code}") from None


def document_response(request: Request, document_id: int) -> StreamingResponse:
    info, data = document_bytes(request, document_id)
    name = f"{document_id}.{extension(info.kind, info.content_type)}"
    return StreamingResponse(
        _chunks(data), media_type=info.content_type,
        headers={"Content-Disposition": f'attachment; filename="{name}"',
                 "Content-Length": str(len(data)), "Cache-Control": "private, no-store",
                 "X-Content-Type-Options": "nosniff"})


def presigned_url(request: Request, document_id: int, seconds: int) -> str:
    """A short-lived S3 GET link to the kept copy (409 when it is not kept in S3)."""
    with request.app.state.engine.connect() as conn:
        row = storage_place(conn, document_id)
    if row is None:
        raise not_found(f"no document {document_id}")
    if row.removed:
        raise ApiError(410, "document_removed", f"document {document_id} was {row.removed}")
    if row.storage_backend != "s3" or not row.location:
        raise ApiError(409, "not_in_s3", f"document {document_id} is not kept in S3 "
                       f"(storage: {row.storage_backend or 'not stored yet'}); download it "
                       "directly instead")
    return _presign(request.app.state.settings.gateways.storage, row.location, seconds)


def _presign(cfg: StorageGateway, location: str, seconds: int) -> str:
    """A SigV4 presigned GET (the ``s3`` extra is optional: MissingExtraError without it)."""
    from comms_pipeline.gateways import s3

    parts = urlsplit(location)
    client = s3.boto3.session.Session(
        aws_access_key_id=cfg.access_key_id, aws_secret_access_key=cfg.secret_access_key,
        region_name=cfg.region,
    ).client("s3", endpoint_url=cfg.endpoint_url, config=s3.Config(signature_version="s3v4"))
    try:
        return str(client.generate_presigned_url(
            "get_object", Params={"Bucket": parts.netloc, "Key": parts.path.lstrip("/")},
            ExpiresIn=seconds))
    except Exception as exc:  # botocore errors become ours at this boundary
        raise ApiError(502, "storage_unavailable", f"S3: {s3.s3_error(exc).code}") from None
    finally:
        client.close()
