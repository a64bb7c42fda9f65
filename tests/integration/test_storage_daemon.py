"""The Storage daemon against moto's S3 server, a real SFTP server, and a local folder."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import update

from comms_pipeline.core.clock import utcnow
from comms_pipeline.core.errors import PermanentGatewayError
from comms_pipeline.daemons.storage import StorageDaemon
from comms_pipeline.gateways.s3 import S3DocumentStore
from comms_pipeline.pipeline.documents import fetch_document
from comms_pipeline.queue.runner import Runner
from comms_pipeline.queue.status import pipeline_status
from comms_pipeline.settings.gateways import StorageGateway
from comms_pipeline.store.models import documents_t
from tests.integration.documents_factory import add_entries, documents
from tests.servers.s3 import ACCESS_KEY, SECRET_KEY
from tests.servers.smtp import free_port

KEY = re.compile(r"(?:(?P<prefix>.+)/)?(?P<y>\d{4})/(?P<m>\d\d)/(?P<d>\d\d)/(?P<h>\d\d)/"
                 r"(?P<id>\d+)\.(?P<ext>eml|pdf)$")


def run_once(settings, engine) -> int:  # type: ignore[no-untyped-def]
    return Runner(settings, engine, StorageDaemon(settings, engine), once=True).run()


def check_layout(key: str, doc: dict, prefix: str | None) -> None:
    found = KEY.match(key)
    assert found, key
    created = doc["created_at"]
    assert found["prefix"] == prefix
    assert (found["y"], found["m"], found["d"], found["h"]) == (
        f"{created:%Y}", f"{created:%m}", f"{created:%d}", f"{created:%H}")
    assert int(found["id"]) == doc["id"]
    assert found["ext"] == {"email": "eml", "letter": "pdf"}[doc["kind"]]


def test_s3_layout_metadata_and_encryption(db_url, s3_bucket, make_engine_for):
    settings, engine = make_engine_for(db_url, **s3_bucket.env(
        prefix="archive/", server_side_encryption="AES256"))
    emails = add_entries(engine, "email", 3, contact_ref="C-7")
    letters = add_entries(engine, "letter", 2, contact_ref="C-7")

    assert run_once(settings, engine) == 5

    client = s3_bucket.client()
    for doc in documents(engine):
        assert doc["storage_backend"] == "s3" and doc["stored_at"] is not None
        assert doc["location"].startswith(f"s3://{s3_bucket.name}/")
        key = doc["location"].removeprefix(f"s3://{s3_bucket.name}/")
        check_layout(key, doc, "archive")
        obj = client.get_object(Bucket=s3_bucket.name, Key=key)
        assert obj["Body"].read() == doc["content"]  # the copy to send stays on the row
        assert obj["ContentType"] == doc["content_type"]
        assert obj["ServerSideEncryption"] == "AES256"
        assert obj["Metadata"] == {"document-id": str(doc["id"]),
                                   "detail-id": str(doc["detail_id"]), "contact-ref": "C-7",
                                   "kind": doc["kind"], "sha256": doc["sha256"]}
    assert sorted(d["detail_id"] for d in documents(engine)) == sorted(emails + letters)
    client.close()


def test_s3_unreachable_then_back_never_giving_up(sqlite_url, s3_bucket, make_engine_for):
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there: no server to bind 0
    settings, engine = make_engine_for(sqlite_url, COMMS_CLAIMS_MAX_ATTEMPTS="2",
                                       **s3_bucket.env(endpoint_url=down, timeout="2"))
    add_entries(engine, "letter", 3)
    for attempt in (1, 2, 3):  # more failures than max_attempts: never given up on
        run_once(settings, engine)
        docs = documents(engine)
        assert all(d["stored_at"] is None and d["next_attempt_at"] > utcnow() for d in docs)
        assert {d["attempts"] for d in docs} == {attempt}  # counted, and never spent
        assert all(d["error_code"] and d["error_description"] for d in docs)  # visible
        with engine.begin() as conn:
            conn.execute(update(documents_t).values(next_attempt_at=None))
    failing = pipeline_status(engine)["documents"]["failing_storage"]
    assert sum(failing.values()) == 3

    settings, engine = make_engine_for(sqlite_url, **s3_bucket.env())
    run_once(settings, engine)
    docs = documents(engine)
    assert all(d["storage_backend"] == "s3" and d["error_code"] is None for d in docs)
    assert pipeline_status(engine)["documents"]["failing_storage"] == {}


def test_a_bucket_that_refuses_is_shown_on_the_documents(sqlite_url, s3_bucket,
                                                          make_engine_for):
    """A permanent refusal (no such bucket) is the operator's to fix: the documents wait,
    each carrying S3's code, and `comms status` counts them by code."""
    settings, engine = make_engine_for(sqlite_url, **s3_bucket.env(
        bucket=f"{s3_bucket.name}-missing"))
    add_entries(engine, "letter", 2)
    run_once(settings, engine)
    assert {d["error_code"] for d in documents(engine)} == {"NoSuchBucket"}
    assert pipeline_status(engine)["documents"]["failing_storage"] == {"NoSuchBucket": 2}


def test_s3_refusals_are_permanent_with_s3s_code(s3_bucket):
    store = S3DocumentStore(StorageGateway(
        backend="s3", bucket=f"{s3_bucket.name}-missing", endpoint_url=s3_bucket.endpoint_url,
        access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY))
    with pytest.raises(PermanentGatewayError) as refused:
        store.put("a/1.pdf", b"%PDF-1.4", "application/pdf", {"kind": "letter"})
    store.close()
    assert refused.value.code == "NoSuchBucket"


def test_sftp_store(db_url, sftp_server, make_engine_for):
    settings, engine = make_engine_for(db_url, **sftp_server.env(
        "storage", sftp_server.known_hosts, prefix="kept"))
    add_entries(engine, "email", 2)
    add_entries(engine, "letter", 1)
    run_once(settings, engine)

    for doc in documents(engine):
        assert doc["storage_backend"] == "sftp"
        prefix = f"sftp://{sftp_server.host}:{sftp_server.port}/archive/"
        assert doc["location"].startswith(prefix)
        key = doc["location"].removeprefix(prefix)
        check_layout(key, doc, "kept")
        assert (sftp_server.root / "archive" / key).read_bytes() == doc["content"]
        info, data = fetch_document(settings, engine, doc["id"])
        assert data == doc["content"] and info.location == doc["location"]


def test_local_store(sqlite_url, make_engine_for):
    settings, engine = make_engine_for(sqlite_url)
    add_entries(engine, "letter", 2)
    add_entries(engine, "email", 1)
    run_once(settings, engine)
    root = settings.var_dir / "store"
    for doc in documents(engine):
        assert doc["storage_backend"] == "local"
        key = doc["location"].removeprefix(f"{root}/")
        check_layout(key, doc, None)
        assert (root / key).read_bytes() == doc["content"]
