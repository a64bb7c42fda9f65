"""The Web API's documentation and access log: every operation has a summary and a
description; each request is logged with method, route, status, duration and the calling
external system, never its key, body or concrete path."""

from __future__ import annotations

from structlog.testing import capture_logs

from tests.integration.web_support import add_system, bearer, client


def test_every_operation_is_documented(sqlite_url, make_engine_for):
    settings, engine = make_engine_for(sqlite_url)
    spec = client(settings, engine).get("/openapi.json").json()
    missing = [f"{method.upper()} {path}" for path, operations in spec["paths"].items()
               for method, op in operations.items()
               if not op.get("summary") or not op.get("description")]
    assert missing == []
    assert {"/health", "/ready", "/metrics", "/v1/requests/{request_id}"} <= set(spec["paths"])


def test_docs_pages_use_local_assets(sqlite_url, make_engine_for):
    settings, engine = make_engine_for(sqlite_url)
    api = client(settings, engine)
    for page, asset in (("/docs", "/docs-assets/swagger-ui-bundle.js"),
                        ("/redoc", "/docs-assets/redoc.standalone.js")):
        html = api.get(page).text
        assert asset in html and "cdn" not in html.lower()
        assert api.get(asset).status_code == 200


def test_access_log_names_the_system_never_the_key(sqlite_url, make_engine_for):
    settings, engine = make_engine_for(sqlite_url)
    _, key = add_system(engine, "CRM")
    api = client(settings, engine)
    with capture_logs() as events:
        api.get("/v1/queue", headers=bearer(key), params={"state": "Pending"})
        api.post("/v1/requests", headers=bearer(key), json={"contact_ref": "C-secret-body",
                                                           "template_code": "X"})
        api.get("/health")
    logged = [e for e in events if e["event"] == "api.request"]
    assert [(e["method"], e["route"], e["status"], e["system"]) for e in logged] == [
        ("GET", "/v1/queue", 200, "CRM"), ("POST", "/v1/requests", 422, "CRM"),
        ("GET", "/health", 200, None)]
    assert all(isinstance(e["ms"], float) for e in logged)
    text = repr(events)
    assert key not in text and key.split("_", 2)[2] not in text and "C-secret-body" not in text


def _examples(spec, media):
    """A request body's examples: on the media type, or on its (referenced) schema."""
    found = list((media.get("examples") or {}).values())
    found += [media["example"]] if "example" in media else []
    schema = media.get("schema", {})
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = spec["components"]["schemas"][name]
    return found + list(schema.get("examples") or []), schema.get("title")


def test_every_request_body_has_an_example_that_validates(sqlite_url, make_engine_for):
    from comms_pipeline.web import schemas

    settings, engine = make_engine_for(sqlite_url)
    spec = client(settings, engine).get("/openapi.json").json()
    missing, bodies = [], 0
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            for media in op.get("requestBody", {}).get("content", {}).values():
                bodies += 1
                examples, title = _examples(spec, media)
                if not examples:
                    missing.append(f"{method.upper()} {path}")
                model = getattr(schemas, title or "", None)
                for example in examples:
                    if model is not None:
                        model.model_validate(example)  # an example the API would accept
    assert bodies >= 3
    assert missing == []
