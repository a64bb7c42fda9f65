"""schemathesis against the OpenAPI document: whatever a client sends that the schema allows
(and, in a second pass, what it does not), the API answers without a server error and every
answer matches its documented schema. In-process against the ASGI app, with an admin key.

Each operation gets its own Hypothesis run inside one test per database (schemathesis's
pytest fixture integration does not support this pytest version), so the suite's fixtures
give every run a freshly migrated database.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from comms_pipeline.web.app import create_app
from tests.integration.documents_factory import add_entries
from tests.integration.web_support import add_system, bearer, external_entries, role_key

EXAMPLES = 6
CHECKS = [not_a_server_error, response_schema_conformance]


def _run(operation, mode, headers, **known):  # type: ignore[no-untyped-def]
    @hsettings(max_examples=EXAMPLES, deadline=None, database=None,
               suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy(generation_mode=mode, **known))
    def run(case):  # type: ignore[no-untyped-def]
        case.call_and_validate(headers=headers, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        # Nothing in an operation without parameters or body can be made invalid.
        assert mode == GenerationMode.NEGATIVE, operation.label


def test_api_conforms_to_its_schema(settings, engine):
    system_id, _ = add_system(engine, "PORTAL")
    entries = external_entries(engine, system_id, 3, contact_ref="C-1")
    [email] = add_entries(engine, "email", 1, contact_ref="C-1")
    add_entries(engine, "letter", 1, contact_ref="C-1")
    app = create_app(settings, engine)
    headers = bearer(role_key(engine, "admin"))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    # Path parameters that exist, so that the found paths are exercised too.
    existing = {"entry_id": entries[0], "detail_id": email, "document_id": 1, "ref": "C-1",
                "name": "opt_out_direct_marketing"}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run(operation, mode, headers)
        known = {p.name: existing[p.name] for p in operation.path_parameters
                 if p.name in existing}
        if known:
            _run(operation, GenerationMode.POSITIVE, headers, path_parameters=known)
    _run(schema["/v1/requests"]["POST"], GenerationMode.POSITIVE, headers,
         body={"contact_ref": "C-1", "event": "payment_posted"})
