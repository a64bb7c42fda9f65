"""Two callers racing on one entry: exactly one wins (compare-and-set), on SQLite and on
PostgreSQL; a status file ends in the same transitions as the API."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from comms_pipeline.queue.actions import apply_status_file
from comms_pipeline.web.app import create_app
from tests.integration.details_factory import transitions
from tests.integration.web_support import add_system, bearer, detail, external_entries

ROUNDS = 12


def _race(calls):  # type: ignore[no-untyped-def]
    """Run the callables at the same moment, one thread each; their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call):  # type: ignore[no-untyped-def]
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_complete_and_reject_racing_on_one_entry_have_one_winner(settings, engine):
    system_id, key = add_system(engine, "PORTAL")
    auth = bearer(key)
    app = create_app(settings, engine)
    entries = external_entries(engine, system_id, ROUNDS)
    with TestClient(app) as one, TestClient(app) as two:
        for entry in entries:
            results = _race([
                lambda e=entry: one.post(f"/v1/queue/{e}/complete", headers=auth),
                lambda e=entry: two.post(f"/v1/queue/{e}/reject", headers=auth,
                                         json={"code": "E", "description": "lost"}),
            ])
            codes = sorted(r.status_code for r in results)
            assert codes == [200, 409], (entry, [r.json() for r in results])
            winner = next(r for r in results if r.status_code == 200).json()
            assert detail(engine, entry)["state"] == \
                {"Completed": "completed", "Rejected": "rejected"}[winner["state"]]
            assert len(transitions(engine, entry)) == 1


def test_the_same_idempotent_call_twice_at_once_acts_once(settings, engine):
    system_id, key = add_system(engine, "PORTAL")
    app = create_app(settings, engine)
    entries = external_entries(engine, system_id, ROUNDS)
    with TestClient(app) as one, TestClient(app) as two:
        for entry in entries:
            headers = {**bearer(key), "Idempotency-Key": f"done-{entry}"}
            results = _race([lambda c=c, e=entry, h=headers: c.post(f"/v1/queue/{e}/complete",
                                                                     headers=h)
                             for c in (one, two)])
            assert [r.status_code for r in results] == [200, 200], [r.json() for r in results]
            assert results[0].json() == results[1].json()
            assert len(transitions(engine, entry)) == 1


def test_a_status_file_ends_in_the_same_transitions(engine, tmp_path):
    system_id, _ = add_system(engine, "CAS")
    other_id, _ = add_system(engine, "PORTAL")
    e1, e2, e3, e4 = external_entries(engine, system_id, 4)
    [foreign] = external_entries(engine, other_id, 1)
    csv_file = tmp_path / "status-0001.csv"
    csv_file.write_text(
        "entry_id,status,error_code,error_description\n"
        f"{e1},Sent,,\n"
        f"{e2},Error,CAS-9,card not paired\n"
        f"{e3},Removed,,\n"
        f"{e2},Sent,,\n"          # already Rejected: refused with the reason
        f"{foreign},Sent,,\n"     # another system's entry: as if it did not exist
        "abc,Sent,,\n"            # malformed line
        f"{e4},Shipped,,\n",      # unknown status word
        encoding="utf-8")
    result = apply_status_file(engine, csv_file, external_system="CAS")
    assert result.applied == 3
    reasons = {line: reason for line, _, reason in result.refused}
    assert set(reasons) == {5, 6, 7, 8}
    assert "Rejected" in reasons[5] and "no queue entry" in reasons[6]
    assert "not a number" in reasons[7] and "Shipped" in reasons[8]
    states = {e: detail(engine, e)["state"] for e in (e1, e2, e3, e4, foreign)}
    assert states == {e1: "completed", e2: "rejected", e3: "completed_removed",
                      e4: "awaiting_external", foreign: "awaiting_external"}
    assert (detail(engine, e2)["error_code"], detail(engine, e2)["error_description"]) == \
        ("CAS-9", "card not paired")

    json_file = tmp_path / "status-0002.json"
    json_file.write_text(json.dumps({"entries": [
        {"entry_id": e4, "status": "Error"}, {"entry_id": e1, "status": "Removed"}]}))
    result = apply_status_file(engine, json_file, external_system="CAS")
    assert (result.applied, result.refused) == (2, [])
    assert detail(engine, e4)["state"] == "rejected"
    assert detail(engine, e4)["error_code"] == "EXTERNAL_ERROR"
    assert transitions(engine, e1) == [("awaiting_external", "completed"),
                                       ("completed", "completed_removed")]
