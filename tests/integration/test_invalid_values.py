"""Values no request may hold (a lone surrogate, NUL, NaN, Infinity) are refused at every
entry point with the place and the reason: the Web API (422, field path; NaN refused by the
JSON parser itself), the CLI (one line, exit 2), the Python API (a ValueError); a header a
workflow wrote by SQL ends Error INVALID_REQUEST in the monitor while the rest of its batch
goes on, also when the bad value only fails in the finishing transaction. SQLite and
PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import select, text

from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
from comms_pipeline.jobs import monitor
from comms_pipeline.pipeline.admin_records import save_template
from comms_pipeline.pipeline.triggers import InvalidValue, trigger
from comms_pipeline.queue.runner import Runner
from comms_pipeline.runtime.registry import build_job
from comms_pipeline.settings.config import ClaimSettings
from comms_pipeline.store.models import details_t, headers_t
from tests.factories import contact, sms_template
from tests.integration.web_support import add_system, bearer, client, role_key

GOOD = '{"contact_ref": "C-1", "template_code": "HELLO"'


@pytest.fixture
def ready(settings, engine):
    with engine.begin() as conn:
        contact(conn, ref="C-1")
        sms_template(conn, code="HELLO", text="Hello #param.name",
                     unrestricted_params=["name"])
    return settings, engine


def _headers(engine):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(headers_t).order_by(headers_t.c.id)).all()


@pytest.mark.parametrize("tail, field, words", [
    (', "params": {"name": "x\\ud800y"}}', "body.params.name", "not valid Unicode"),
    (', "params": {"name": "x\\udc00"}}', "body.params.name", "unpaired surrogate"),
    (', "params": {"name": "x\\u0000y"}}', "body.params.name", "NUL"),
    (', "params": {"n\\ud800": 1}}', "body.params.n\ufffd\ufffd\ufffd",
     "the name is not valid Unicode"),
    (', "entities": {"s": {"a": ["ok", "x\\udfffy"]}}}', "body.entities.s.a.1",
     "is not valid Unicode"),
    (', "entities": {"s": {"a": {"b": "\\u0000"}}}}', "body.entities.s.a.b",
     "contains a NUL"),
    (', "idempotency_key": "k\\ud800"}', "body.idempotency_key", "not valid Unicode"),
    (', "event_number": "\\udbff"}', "body.event_number", "not valid Unicode"),
    (', "params": {"amount": NaN}}', "body", "NaN and Infinity are not JSON numbers"),
    (', "params": {"amount": Infinity}}', "body", "NaN and Infinity are not JSON numbers"),
    (', "entities": {"s": {"a": -Infinity}}}', "body", "not valid JSON at character"),
    (', "priority": NaN}', "body", "NaN and Infinity"),
])
def test_the_api_refuses_them_with_the_field(ready, tail, field, words):
    settings, engine = ready
    api = client(settings, engine)
    r = api.post("/v1/requests", headers={**bearer(role_key(engine, "admin")),
                                          "Content-Type": "application/json"},
                 content=(GOOD + tail).encode())
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["code"] == "invalid_request"
    assert [d["field"] for d in problem["details"]][0] == field, problem
    assert words in problem["message"], problem
    assert "Error" not in problem["message"] and "Traceback" not in problem["message"]
    assert _headers(engine) == []


def test_the_api_refuses_a_body_that_is_not_utf8(ready):
    settings, engine = ready
    api = client(settings, engine)
    r = api.post("/v1/requests", headers={**bearer(role_key(engine, "admin")),
                                          "Content-Type": "application/json"},
                 content=(GOOD + ', "params": {"name": "\xff"}}').encode("latin-1"))
    assert r.status_code == 422 and "not valid UTF-8" in r.json()["message"], r.text
    assert _headers(engine) == []


@pytest.mark.parametrize("kw, where", [
    ({"params": {"name": "x\ud800y"}}, "params.name"),
    ({"entities": {"s": {"n": float("nan")}}}, "entities.s.n"),
    ({"entities": {"s": [float("-inf")]}}, "entities.s.0"),
    ({"params": {"name": "a\x00"}}, "params.name"),
    ({"contact_ref": "C-\udc80"}, "contact_ref"),
    ({"idempotency_key": "k\x00"}, "idempotency_key"),
])
def test_the_python_api_raises_a_value_error(ready, kw, where):
    _, engine = ready
    args = {"contact_ref": "C-1", "template_code": "HELLO", **kw}
    with pytest.raises(InvalidValue) as caught:
        trigger(engine, **args)
    assert isinstance(caught.value, ValueError)
    assert caught.value.path == where and str(caught.value).startswith(f"{where}: ")
    assert _headers(engine) == []


@pytest.mark.parametrize("args, words", [
    ([b"--param", b"name=x\xffy"], "params.name: is not valid Unicode"),
    ([b"--entity", b's={"a": NaN}'], "entities.s.a: is not a number (NaN)"),
    ([b"--entity", b's={"a": ["\\ud800"]}'], "entities.s.a.0: is not valid Unicode"),
    ([b"--entity", b's={"a": Infinity}'], "entities.s.a: is infinite"),
    ([b"--entity", b's={"a": "\\u0000"}'], "entities.s.a: contains a NUL"),
])
def test_the_cli_says_it_in_one_line_and_exits_2(ready, args, words):
    settings, engine = ready
    env = {**os.environ, "COMMS_DATABASE_URL": settings.database_url,
           "COMMS_PATHS_VAR": str(settings.var_dir)}
    proc = subprocess.run([sys.executable.encode(), b"-m", b"comms_pipeline.cli.main",
                           b"trigger", b"--contact", b"C-1", b"--template", b"HELLO", *args],
                          env=env, capture_output=True, timeout=120)
    err = proc.stderr.decode("utf-8", "replace").strip()
    assert proc.returncode == 2, (proc.stdout, err)
    assert err.count("\n") == 0 and err.startswith("Error: ") and words in err, err
    assert _headers(engine) == []


def _insert_by_sql(engine, names: list[str], template: str = "HELLO"  # type: ignore[no-untyped-def]
                   ) -> list[int]:
    """Headers as a workflow writes them, the params' JSON text given as is."""
    ids = []
    with engine.begin() as conn:
        for name in names:
            ids.append(conn.execute(text(
                "INSERT INTO request_headers (contact_ref, template_code, params, status, "
                "send_to, priority, override_consent, details_created, attempts, created_at) "
                "VALUES ('C-1', :template, :params, 'awaiting_processing', 'primary', 2, "
                "false, 0, 0, CURRENT_TIMESTAMP) RETURNING id"),
                {"template": template, "params": '{"name": "' + name + '"}'}).scalar_one())
    return ids


POISON = ["Maria", "x\\ud800y", "Eleni", "x\\u0000y", "Andreas"]
#: Values SQLite stores (NUL) do not fail its finishing transaction: lone surrogates only.
UNSTORABLE = ["Maria", "x\\ud800y", "Eleni", "\\udfff", "Andreas"]


def _check_batch(engine, ids, names, reason_words):  # type: ignore[no-untyped-def]
    by_id = {h.id: h for h in _headers(engine)}
    with engine.connect() as conn:
        bodies = dict(conn.execute(select(details_t.c.header_id, details_t.c.body)).all())
    for i, name in zip(ids, names, strict=True):
        h = by_id[i]
        if "\\u" in name:
            assert (h.status, h.status_code) == ("error", "INVALID_REQUEST"), h
            assert reason_words[name[name.index("\\u") + 2:][:2]] in h.status_reason, \
                h.status_reason
            assert h.claimed_by is None and i not in bodies
        else:
            assert h.status == "processed", h
            assert bodies[i] == f"Hello {name}"


def test_the_monitor_ends_a_poison_header_and_goes_on(ready, tmp_path):
    settings, engine = ready
    ids = _insert_by_sql(engine, POISON)
    env = {**os.environ, "COMMS_DATABASE_URL": settings.database_url,
           "COMMS_PATHS_VAR": str(tmp_path / "var")}
    proc = subprocess.run([sys.executable, "-m", "comms_pipeline.cli.main", "job", "run",
                           "monitor"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _check_batch(engine, ids, POISON, {"d8": "params.name is not valid Unicode text",
                                       "00": "params.name contains a NUL character"})


@pytest.mark.parametrize("template", ["HELLO_EXT", "HELLO"])
def test_any_failure_to_finish_a_batch_is_finished_row_by_row(ready, monkeypatch, template):
    """Without the monitor's own check, the insert of the poison rows' details fails in the
    finishing transaction (an external text: HELLO_EXT) or the handler fails on them (an SMS
    text is encoded: HELLO): the batch is finished row by row, the poison rows end Error
    INVALID_REQUEST, the others are processed, and nothing stays claimed."""
    settings, engine = ready
    add_system(engine, "PORTAL")
    with engine.begin() as conn:  # merged by the monitor without encoding it: only the
        save_template(conn, TemplateSpec(  # database refuses the text
            code="HELLO_EXT", name="Hello", media="external", external_system="PORTAL",
            unrestricted_params=["name"],
            variants=[VariantSpec("en", body_text="Hello #param.name")]))
    monkeypatch.setattr(monitor, "invalid_value", lambda h: None)
    ids = _insert_by_sql(engine, UNSTORABLE, template)
    runner = Runner(settings.model_copy(update={"claims": ClaimSettings(max_attempts=1)}),
                    engine, build_job("monitor", settings, engine), once=True)
    assert runner.run() == len(UNSTORABLE)
    assert runner.failed_batches == 1
    reason = "could not be stored: a value is not valid Unicode text"
    _check_batch(engine, ids, UNSTORABLE, {"d8": reason, "df": reason})
