"""S3 document store (boto3): one object per document, with metadata and optional SSE.

Objects are written with ``put_object`` under the key the storage daemon chooses
(``[prefix/]YYYY/MM/DD/HH/<id>.<ext>``); the location recorded on the document is
``s3://<bucket>/<key>``. botocore errors become gateway errors here: throttling, timeouts,
5xx replies and lost connections are transient; other 4xx replies (no such bucket, access
denied, invalid argument) are permanent, carrying S3's own error code and message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from comms_pipeline.core.errors import (
    ConfigError,
    GatewayError,
    MissingExtraError,
    PermanentGatewayError,
    TransientGatewayError,
)

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError
except ImportError as exc:  # pragma: no cover - boto3 is part of the test extras
    raise MissingExtraError("boto3", "s3") from exc

if TYPE_CHECKING:
    from comms_pipeline.settings.gateways import StorageGateway

TRANSIENT_CODES = frozenset({
    "SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable",
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "OperationAborted",
})


def s3_error(exc: BaseException) -> GatewayError:
    """Translate a botocore exception into a gateway error."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = str(error.get("Code") or status or "ClientError")
        message = str(error.get("Message") or exc)
        transient = status >= 500 or status in (408, 429) or code in TRANSIENT_CODES
        return (TransientGatewayError if transient else PermanentGatewayError)(code, message)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return TransientGatewayError("NO_CREDENTIALS", str(exc))
    if isinstance(exc, ReadTimeoutError):
        return TransientGatewayError("TIMEOUT", str(exc))
    if isinstance(exc, BotoConnectionError):
        return TransientGatewayError("CONNECTION", str(exc))
    if isinstance(exc, BotoCoreError):
        return TransientGatewayError(type(exc).__name__, str(exc))
    if isinstance(exc, OSError):
        return TransientGatewayError("NETWORK", str(exc))
    return TransientGatewayError("S3", f"{type(exc).__name__}: {exc}")


def _header_safe(value: str) -> str:
    """S3 metadata travels in HTTP headers: keep it ASCII (percent-encode the rest)."""
    return value if value.isascii() else quote(value, safe="")


class S3DocumentStore:
    backend = "s3"

    def __init__(self, cfg: StorageGateway) -> None:
        if not cfg.bucket:
            raise ConfigError("gateways.storage.bucket must be set for the s3 backend")
        self.bucket = cfg.bucket
        self.extra: dict[str, Any] = {}
        if cfg.server_side_encryption:
            self.extra["ServerSideEncryption"] = cfg.server_side_encryption
            if cfg.sse_kms_key_id:
                self.extra["SSEKMSKeyId"] = cfg.sse_kms_key_id
        session = boto3.session.Session(aws_access_key_id=cfg.access_key_id,
                                        aws_secret_access_key=cfg.secret_access_key,
                                        region_name=cfg.region)
        self.client = session.client(
            "s3", endpoint_url=cfg.endpoint_url,
            config=Config(connect_timeout=cfg.connect_timeout, read_timeout=cfg.timeout,
                          retries={"total_max_attempts": cfg.attempts, "mode": "standard"}))

    def put(self, key: str, data: bytes, content_type: str,
            metadata: Mapping[str, str]) -> str:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
                Metadata={k: _header_safe(v) for k, v in metadata.items()}, **self.extra)
        except Exception as exc:  # mapped to our errors at this boundary
            raise s3_error(exc) from None
        return f"s3://{self.bucket}/{key}"

    def get(self, location: str) -> bytes:
        parts = urlsplit(location)
        try:
            obj = self.client.get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))
            return obj["Body"].read()
        except Exception as exc:  # mapped to our errors at this boundary
            raise s3_error(exc) from None

    def delete(self, location: str) -> None:
        """S3 answers a missing key's deletion with success: removing twice is fine."""
        parts = urlsplit(location)
        try:
            self.client.delete_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))
        except Exception as exc:  # mapped to our errors at this boundary
            raise s3_error(exc) from None

    def close(self) -> None:
        self.client.close()
