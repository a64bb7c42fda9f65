"""Configuration of each gateway: which backend, and that backend's options.

Local-folder backends are the embedded default; each writes under ``var/out/<media>``.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Gateway(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Timeouts(_Gateway):
    """How long a hung peer may hold a worker. ``timeout`` (in each gateway) bounds every wait
    for an answer (a read); a peer that accepts the connection and then says nothing turns
    into a transient failure (retried later) after it, not a frozen worker."""

    connect_timeout: float = Field(10.0, gt=0, description="TCP connect (and TLS/SSH "
                                   "handshake) timeout, seconds")
    total_timeout: float = Field(300.0, gt=0, description="the most one message, request or "
                                 "upload may take end to end, however slowly the peer "
                                 "trickles its answer, seconds")


class _Pooled(_Timeouts):
    """What every gateway of a failover list has: a name, a shared rate, a circuit breaker."""

    name: str | None = Field(None, max_length=64, description="how entries and logs name "
                             "this gateway; unset: its backend (the first gateway) or "
                             "backend-N (the N-th)")
    max_rate_per_second: float | None = Field(
        None, gt=0, description="the most messages (SMPP: submit_sm PDUs) per second all "
        "copies of the daemon on all machines send through this gateway together: a token "
        "bucket in PostgreSQL (on SQLite, per process); unset: no limit")
    max_rate_burst: int | None = Field(
        None, ge=1, description="tokens the shared bucket holds at most (unset: a twentieth "
        "of a second's worth, at least 1)")
    breaker_failures: int = Field(5, ge=1, description="with fallbacks: transient failures "
                                  "in a row that open this gateway's circuit breaker")
    breaker_open_seconds: float = Field(30.0, gt=0, description="an open breaker sends "
                                        "nothing this long, then lets one probe through")
    breaker_failure_rate: float | None = Field(
        0.5, gt=0, le=1, description="with fallbacks: this share of transient failures over "
        "breaker_window_seconds also opens the breaker (unset: only failures in a row)")
    breaker_window_seconds: float = Field(60.0, gt=0)
    breaker_min_calls: int = Field(20, ge=1, description="answers the window must hold "
                                   "before its failure rate counts")


class EmailGateway(_Pooled):
    backend: Literal["local", "smtp"] = "local"
    host: str = "127.0.0.1"
    port: int = Field(25, ge=1, le=65535)
    security: Literal["none", "starttls", "ssl"] = "none"
    username: str | None = None
    password: str | None = None
    timeout: float = Field(30.0, gt=0)
    connections: int = Field(1, ge=1, le=64)
    rate_per_second: float = Field(0.0, ge=0, description="0 means unlimited")
    tls_ca_file: str | None = Field(None, description="CA bundle to verify the server with")
    tls_verify: bool = True
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_key_file: str | None = None


class SmsGateway(_Pooled):
    backend: Literal["local", "smpp", "http"] = "local"
    host: str = "127.0.0.1"
    port: int = Field(2775, ge=1, le=65535)
    system_id: str = ""
    password: str = ""
    system_type: str = ""
    source_addr: str = "Comms"
    source_addr_ton: int = Field(5, ge=0, le=6, description="5 = alphanumeric sender")
    source_addr_npi: int = Field(0, ge=0, le=18)
    dest_addr_ton: int = Field(1, ge=0, le=6, description="1 = international number")
    dest_addr_npi: int = Field(1, ge=0, le=18, description="1 = E.164")
    window: int = Field(10, ge=1, le=1000)
    enquire_link_seconds: float = Field(30.0, gt=0)
    timeout: float = Field(10.0, gt=0)
    receipts: bool = Field(True, description="ask the SMSC for delivery receipts")
    receipt_id_format: Literal["exact", "hex-to-dec", "dec-to-hex"] = Field(
        "exact", description="how receipts write message ids: exactly as submit_sm_resp gave "
        "them ('exact'), in hex for ids the response gave in decimal ('hex-to-dec'), or in "
        "decimal for ids it gave in hex ('dec-to-hex'); a receipt whose id is some message's "
        "exact id always goes to that message")
    receipt_hold_seconds: float = Field(
        300.0, gt=0, description="keep a receipt whose message is not yet recorded this long")
    throttle_delay_seconds: float = Field(0.05, gt=0)
    throttle_give_up_seconds: float = Field(
        60.0, gt=0, description="after this long throttled, the rest of a batch is retried later")
    reconnect_attempts: int = Field(3, ge=1)
    throttle_slow_seconds: float = Field(
        10.0, gt=0, description="with max_rate_per_second: ESME_RTHROTTLED halves the shared "
        "rate of every copy for this long")
    url: str = ""
    api_key: str | None = None
    http_batch_size: int = Field(100, ge=1, le=1000)
    max_parts: int = Field(8, ge=1, le=255)


class PushGateway(_Timeouts):
    backend: Literal["local", "fcm"] = "local"
    url: str = ""
    access_token: str | None = None
    timeout: float = Field(10.0, gt=0)
    concurrency: int = Field(8, ge=1, le=256, description="requests in flight at once")


class WebhookGateway(_Timeouts):
    backend: Literal["local", "http"] = "local"
    timeout: float = Field(10.0, gt=0)
    allow_private_targets: bool = False
    allow_loopback_targets: bool = False
    disable_after_failures: int = Field(20, ge=1)
    concurrency: int = Field(8, ge=1, le=256, description="requests in flight at once")
    retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: [60.0, 300.0, 1800.0, 7200.0, 18000.0],
        description="delay before each retry (the last one repeats); attempts are capped by "
        "claims.max_attempts")


class LetterGateway(_Timeouts):
    backend: Literal["local", "sftp"] = "local"
    host: str = "127.0.0.1"
    port: int = Field(22, ge=1, le=65535)
    username: str = ""
    password: str | None = None
    key_file: str | None = None
    known_hosts_file: str | None = None
    remote_dir: str = "/incoming"
    timeout: float = Field(15.0, gt=0)


class StorageGateway(_Timeouts):
    backend: Literal["local", "s3", "sftp"] = "local"
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str | None = None
    region: str = "us-east-1"
    server_side_encryption: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None
    access_key_id: str | None = Field(None, description="None: boto3's own credential chain")
    secret_access_key: str | None = None
    timeout: float = Field(15.0, gt=0)
    attempts: int = Field(3, ge=1, le=10, description="S3: tries per request (botocore's "
                          "standard retry mode), each bounded by the timeouts")
    host: str = "127.0.0.1"
    port: int = Field(22, ge=1, le=65535)
    username: str = ""
    password: str | None = None
    key_file: str | None = None
    known_hosts_file: str | None = None
    remote_dir: str = "/archive"


class GatewaysSettings(_Gateway):
    email: EmailGateway = Field(default_factory=EmailGateway)
    sms: SmsGateway = Field(default_factory=SmsGateway)
    #: Tried in order while the ones before them are unavailable (circuit breaker open) or
    #: failed a message transiently; ``email`` / ``sms`` above is always the first.
    email_fallbacks: list[EmailGateway] = Field(default_factory=list)
    sms_fallbacks: list[SmsGateway] = Field(default_factory=list)
    push: PushGateway = Field(default_factory=PushGateway)
    webhook: WebhookGateway = Field(default_factory=WebhookGateway)
    letter: LetterGateway = Field(default_factory=LetterGateway)
    storage: StorageGateway = Field(default_factory=StorageGateway)

    @model_validator(mode="after")
    def _names_unique(self) -> GatewaysSettings:
        for media, names in (("email", [n for n, _ in self.email_pool()]),
                             ("sms", [n for n, _ in self.sms_pool()])):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{media}: two gateways are named {twice[0]!r}: give each "
                                 f"of gateways.{media} and gateways.{media}_fallbacks a "
                                 f"distinct name")
        return self

    def email_pool(self) -> list[tuple[str, EmailGateway]]:
        """The email gateways in order, each with its name (see ``_Pooled.name``)."""
        return _named([self.email, *self.email_fallbacks])

    def sms_pool(self) -> list[tuple[str, SmsGateway]]:
        """The SMS gateways in order, each with its name (see ``_Pooled.name``)."""
        return _named([self.sms, *self.sms_fallbacks])


G = TypeVar("G", EmailGateway, SmsGateway)


def _named(gateways: list[G]) -> list[tuple[str, G]]:
    return [(cfg.name or (cfg.backend if n == 1 else f"{cfg.backend}-{n}"), cfg)
            for n, cfg in enumerate(gateways, 1)]
