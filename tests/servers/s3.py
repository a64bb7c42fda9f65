"""moto's S3 server on a free loopback port (``moto[server]``), one per test session, and a
fresh bucket per test."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from tests.conftest import require_service

ACCESS_KEY = "testing-key"
SECRET_KEY = "testing-secret"
REGION = "us-east-1"


@dataclass
class S3Bucket:
    endpoint_url: str
    name: str

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.session.Session(aws_access_key_id=ACCESS_KEY,
                                     aws_secret_access_key=SECRET_KEY,
                                     region_name=REGION).client("s3",
                                                                endpoint_url=self.endpoint_url)

    def env(self, **extra: str) -> dict[str, str]:
        """``COMMS_GATEWAYS_STORAGE_*`` settings that point the storage gateway here."""
        env = {"COMMS_GATEWAYS_STORAGE_BACKEND": "s3",
               "COMMS_GATEWAYS_STORAGE_BUCKET": self.name,
               "COMMS_GATEWAYS_STORAGE_ENDPOINT_URL": self.endpoint_url,
               "COMMS_GATEWAYS_STORAGE_REGION": REGION,
               "COMMS_GATEWAYS_STORAGE_ACCESS_KEY_ID": ACCESS_KEY,
               "COMMS_GATEWAYS_STORAGE_SECRET_ACCESS_KEY": SECRET_KEY,
               "COMMS_GATEWAYS_STORAGE_TIMEOUT": "10"}
        env.update({f"COMMS_GATEWAYS_STORAGE_{k.upper()}": v for k, v in extra.items()})
        return env


@pytest.fixture(scope="session")
def s3_endpoint():
    """The endpoint URL of a moto S3 server running in this process."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        require_service(False, f"moto[server] ({exc})")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint) -> S3Bucket:
    """A new, empty bucket on the moto server."""
    bucket = S3Bucket(s3_endpoint, f"comms-{uuid.uuid4().hex[:12]}")
    client = bucket.client()
    client.create_bucket(Bucket=bucket.name)
    client.close()
    return bucket
