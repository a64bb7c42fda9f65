"""paramiko / socket / botocore errors become the project's gateway errors."""

from __future__ import annotations

import errno

import paramiko
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from paramiko.ssh_exception import NoValidConnectionsError

from comms_pipeline.core.errors import PermanentGatewayError, TransientGatewayError
from comms_pipeline.gateways.s3 import s3_error
from comms_pipeline.gateways.sftp import UnknownHostKeyError, sftp_error


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} happened"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


@pytest.mark.parametrize(("exc", "kind", "code"), [
    (client_error("NoSuchBucket", 404), PermanentGatewayError, "NoSuchBucket"),
    (client_error("AccessDenied", 403), PermanentGatewayError, "AccessDenied"),
    (client_error("SlowDown", 503), TransientGatewayError, "SlowDown"),
    (client_error("InternalError", 500), TransientGatewayError, "InternalError"),
    (client_error("RequestTimeout", 400), TransientGatewayError, "RequestTimeout"),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), TransientGatewayError,
     "CONNECTION"),
    (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), TransientGatewayError, "TIMEOUT"),
])
def test_s3_errors(exc, kind, code):
    err = s3_error(exc)
    assert type(err) is kind and err.code == code and err.description


def test_s3_client_error_keeps_s3s_message():
    assert s3_error(client_error("NoSuchBucket", 404)).description == "NoSuchBucket happened"


@pytest.mark.parametrize(("exc", "code"), [
    (UnknownHostKeyError("the host key of [h]:22 is not in known_hosts"), "HOST_KEY_UNKNOWN"),
    (paramiko.AuthenticationException("Authentication failed."), "AUTH_FAILED"),
    (paramiko.SSHException("Error reading SSH protocol banner"), "SSH"),
    (EOFError(), "DISCONNECTED"),
    (TimeoutError("timed out"), "TIMEOUT"),
    (PermissionError(errno.EACCES, "Permission denied"), "EACCES"),
    (NoValidConnectionsError({("127.0.0.1", 22): ConnectionRefusedError(
        errno.ECONNREFUSED, "Connection refused")}), "ECONNREFUSED"),
    (OSError("Failure"), "SFTP"),
])
def test_sftp_errors_are_transient(exc, code):
    err = sftp_error(exc)
    assert type(err) is TransientGatewayError and err.code == code and err.description


def test_changed_host_key():
    key = paramiko.Ed25519Key.generate() if hasattr(paramiko.Ed25519Key, "generate") else None
    if key is None:
        key = paramiko.RSAKey.generate(1024)
    err = sftp_error(paramiko.BadHostKeyException("[h]:2222", key, key))
    assert err.code == "HOST_KEY_MISMATCH" and "[h]:2222" in err.description
