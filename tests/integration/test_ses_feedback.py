"""``POST /feedback/ses``: Amazon SES notifications via SNS, on the Web API served by uvicorn.

The test is its own SNS: a certificate and key made here sign the messages (SignatureVersion
1, SHA-1, and 2, SHA-256), and the app's certificate fetcher is handed that certificate for
the SNS address the messages name -- so everything but Amazon's network is real: the HTTP
server, the signature check with ``cryptography``, the database writes."""

from __future__ import annotations

import base64
import datetime as dt
import json

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from comms_pipeline.gateways.sns import SnsVerifier, canonical_string
from comms_pipeline.pipeline.verp import VerpAddresses
from comms_pipeline.web.app import create_app
from tests.integration.bounce_support import bounce_env, reports
from tests.integration.documents_factory import add_entries, details
from tests.integration.test_bounces import _completed
from tests.servers.web_app import ServedApp

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem"


@pytest.fixture(scope="module")
def signer():  # type: ignore[no-untyped-def]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


def sign(message: dict, key, version: str = "1") -> dict:  # type: ignore[no-untyped-def]
    message = {"SignatureVersion": version, "SigningCertURL": CERT_URL, **message}
    algorithm = hashes.SHA1() if message["SignatureVersion"] == "1" else hashes.SHA256()
    signature = key.sign(canonical_string(message), padding.PKCS1v15(), algorithm)
    return {**message, "Signature": base64.b64encode(signature).decode()}


def notification(payload: dict, **extra) -> dict:  # type: ignore[no-untyped-def]
    return {"Type": "Notification", "MessageId": "9f1c2b4e-0000-4000-8000-000000000001",
            "TopicArn": TOPIC, "Message": json.dumps(payload),
            "Timestamp": "2026-12-02T04:30:00.000Z", **extra}


def ses_bounce(source: str, recipient: str, bounce_type: str = "Permanent") -> dict:
    return {"notificationType": "Bounce",
            "bounce": {"bounceType": bounce_type, "bounceSubType": "General",
                       "bouncedRecipients": [{
                           "emailAddress": recipient, "action": "failed", "status": "5.1.1",
                           "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
                       "timestamp": "2026-12-02T04:29:59.000Z",
                       "feedbackId": "0102018b-0000", "reportingMTA": "dsn; a1-2.smtp-out"},
            "mail": {"timestamp": "2026-12-02T04:29:58.000Z", "source": source,
                     "messageId": "0102018b-ses-id", "destination": [recipient],
                     "commonHeaders": {"messageId": "<unrelated@comms.example.com>"}}}


@pytest.fixture
def api(db_url, make_engine_for, signer):  # type: ignore[no-untyped-def]
    settings, engine = make_engine_for(db_url, **bounce_env(
        COMMS_BOUNCES_SES_TOPIC_ARNS=json.dumps([TOPIC])))
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return signer[1] if url == CERT_URL else b"<ConfirmSubscriptionResponse/>"

    app = create_app(settings, engine)
    app.state.sns_verifier = SnsVerifier(fetch=fetch)
    served = ServedApp(app).start()
    yield settings, engine, served.base, fetched
    served.stop()


def post(base: str, message: dict) -> httpx.Response:
    # SNS posts its JSON as text/plain.
    return httpx.post(f"{base}/feedback/ses", content=json.dumps(message),
                      headers={"Content-Type": "text/plain; charset=UTF-8",
                               "x-amz-sns-message-type": message.get("Type", "")}, timeout=30)


def test_ses_permanent_bounce_turns_the_entry_rejected(api, signer):
    settings, engine, base, fetched = api
    ids = add_entries(engine, "email", 1)
    _completed(engine, ids)
    source = VerpAddresses.from_settings(settings).address(ids[0])
    resp = post(base, sign(notification(ses_bounce(source, "user0@example.com")), signer[0]))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"type": "Bounce", "recorded": 1, "rejected": 1, "malformed": False}
    row = details(engine, ids)[ids[0]]
    assert (row["state"], row["error_code"]) == ("rejected", "5.1.1")
    assert "550 5.1.1 user unknown" in row["error_description"]
    assert [(r["source"], r["kind"], r["outcome"]) for r in reports(engine)] == \
        [("ses", "hard_bounce", "rejected")]
    assert fetched == [CERT_URL]


def test_signature_v2_complaint_and_transient_bounce_change_no_state(api, signer):
    settings, engine, base, _ = api
    ids = add_entries(engine, "email", 1)
    _completed(engine, ids)
    source = VerpAddresses.from_settings(settings).address(ids[0])
    complaint = {"notificationType": "Complaint", "mail": {"source": source},
                 "complaint": {"complainedRecipients": [{"emailAddress": "user0@example.com"}],
                               "complaintFeedbackType": "abuse", "userAgent": "Yahoo!"}}
    assert post(base, sign(notification(complaint), signer[0], "2")).status_code == 200
    transient = ses_bounce(source, "user0@example.com", "Transient")
    assert post(base, sign(notification(transient), signer[0], "2")).status_code == 200
    assert details(engine, ids)[ids[0]]["state"] == "completed"
    assert [(r["kind"], r["outcome"]) for r in reports(engine)] == \
        [("complaint", "recorded"), ("soft_bounce", "recorded")]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_forged_or_foreign_messages_are_refused_403(api, signer):
    settings, engine, base, fetched = api
    good = sign(notification(ses_bounce("x@bounces.example.com", "a@example.com")), signer[0])
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = {
        "tampered": {**good, "Message": good["Message"].replace("Permanent", "Transient")},
        "wrong key": sign(notification(ses_bounce("x@b", "a@example.com")), other_key),
        "http cert": {**good, "SigningCertURL": CERT_URL.replace("https:", "http:")},
        "foreign host": {**good, "SigningCertURL": "https://sns.eu-west-1.amazonaws.com.evil."
                                                   "example/cert.pem"},
        "other topic": sign(notification(ses_bounce("x@b", "a@example.com"),
                                         TopicArn=TOPIC + "-other"), signer[0]),
        "version 3": {**good, "SignatureVersion": "3"},
    }
    for what, message in cases.items():
        resp = post(base, message)
        assert resp.status_code == 403, what
        assert resp.json()["code"] == "forbidden", what
    assert post(base, {"not": "sns"}).status_code == 403
    assert set(fetched) <= {CERT_URL}  # no other host was ever asked for a certificate
    assert reports(engine) == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_subscription_is_confirmed_and_no_topics_means_404(api, signer, make_engine_for,
                                                           db_url):
    settings, engine, base, fetched = api
    subscribe = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=t0k"
    message = sign({"Type": "SubscriptionConfirmation", "MessageId": "m-1", "Token": "t0k",
                    "TopicArn": TOPIC, "Message": "You have chosen to subscribe",
                    "SubscribeURL": subscribe, "Timestamp": "2026-12-02T04:00:00.000Z"},
                   signer[0])
    resp = post(base, message)
    assert resp.json() == {"type": "SubscriptionConfirmation", "confirmed": True}
    assert fetched == [CERT_URL, subscribe]
    off_settings, off_engine = make_engine_for(db_url)
    served = ServedApp(create_app(off_settings, off_engine)).start()
    try:
        assert post(served.base, message).status_code == 404
    finally:
        served.stop()
