"""Entity data from SQL data sources, against the demo business schema, on both databases."""

from __future__ import annotations

import tomllib
from decimal import Decimal

import pytest

from comms_pipeline.pipeline import entity_sources as es
from comms_pipeline.pipeline.entity_sources import (
    EntitySourceError,
    load_demo_business,
    load_sources,
    needed_entities,
    resolve_entities,
)
from comms_pipeline.pipeline.template_files import BUILTIN_DIR, load_template_dir
from comms_pipeline.rendering import build_context, compile_template

DEMO_SOURCES = es.DEMO_SOURCES


@pytest.fixture
def business(db_url):
    """The demo business schema loaded into the test database; sources pointing at it."""
    load_demo_business(db_url)
    config = tomllib.loads(DEMO_SOURCES.read_text())["entity_sources"]
    for section in config.values():
        section["database_url"] = db_url
    yield load_sources(config)
    es.dispose_engines()


def test_a_trigger_with_only_ids_gets_the_business_data(business):
    entities = resolve_entities(business, {"payment": {"id": 1}},
                                contact={"ref": "C-1001", "name": "Maria Georgiou"})
    payment, account = entities["payment"], entities["accounts_receivable"]
    assert (payment["id"], payment["number"], payment["method"]) == (1, "P-5001", "card")
    assert Decimal(str(payment["amount"])) == Decimal("42.50")
    assert str(payment["posted_on"]) == "2024-10-02"
    assert (account["number"], account["name"]) == ("AR-1001", "Maria Georgiou")
    assert "subscription" not in entities


def test_the_seed_template_renders_from_ids_alone(business):
    spec = load_template_dir(BUILTIN_DIR / "payment_receipt")
    contact = {"ref": "C-1005", "name": "Sofia Ioannou"}
    entities = resolve_entities(business, {"payment": {"id": 3}}, contact=contact,
                                wanted=needed_entities(spec.referring_entities))
    context = build_context(contact=contact, entities=entities, params={},
                            referring_entities=spec.referring_entities, language="el")
    text = compile_template(spec.variants[1].body_text).render(context)
    assert "P-5003" in text
    assert "60,00 €" in text
    assert "250,00 €" in text  # the balance, via #payment.accounts_receivable from its source
    assert "4 Οκτ 2024" in text


def test_wanted_limits_the_queries(business):
    entities = resolve_entities(business, {"payment": {"id": 1}}, contact={"ref": "C-1001"},
                                wanted={"payment"})
    assert set(entities) == {"payment"}
    assert needed_entities(["payment"]) == {"payment", "accounts_receivable", "wallet"}


def test_chained_and_list_sources(db_url, business):
    sources = load_sources({
        "bill": {"database_url": db_url,
                 "query": "SELECT number, accounts_receivable_id FROM bills WHERE id = :bill_id"},
        "account_of_bill": {
            "database_url": db_url, "entity": "accounts_receivable",
            "query": "SELECT number, name FROM accounts_receivable "
                     "WHERE id = :bill_accounts_receivable_id"},
        "bills_of_account": {
            "database_url": db_url, "entity": "accounts_receivable", "field": "bill_numbers",
            "many": True,
            "query": "SELECT number FROM bills WHERE accounts_receivable_id = "
                     ":bill_accounts_receivable_id ORDER BY number"},
    })
    entities = resolve_entities(sources, {"bill": 2})
    assert entities["bill"]["number"] == "B-2024-0902"
    assert entities["accounts_receivable"]["name"] == "John Smith"
    assert entities["accounts_receivable"]["bill_numbers"] == ["B-2024-0902"]


def test_trigger_data_wins_and_missing_rows_leave_the_ids(business):
    entities = resolve_entities(business, {"payment": {"id": 1, "method": "voucher"},
                                           "bill": {"id": 999}})
    assert entities["payment"]["method"] == "voucher"
    assert entities["bill"] == {"id": 999}


def test_values_are_bound_never_formatted_into_sql(business):
    evil = "C-1001' OR '1'='1"
    entities = resolve_entities(business, {}, contact={"ref": evil})
    assert entities == {}


def test_a_broken_source_is_our_error(db_url):
    sources = load_sources({"payment": {"database_url": db_url,
                                        "query": "SELECT nope FROM no_such_table "
                                                 "WHERE id = :payment_id"}})
    with pytest.raises(EntitySourceError, match="entity source 'payment' failed"):
        resolve_entities(sources, {"payment": {"id": 1}})
    es.dispose_engines()


def test_configuration_errors_name_the_source():
    with pytest.raises(EntitySourceError, match="entity_sources.bill"):
        load_sources({"bill": {"query": "SELECT 1", "colour": "red"}})
    assert load_sources(object()) == []
    assert load_sources({"bill": {"query": "SELECT :bill_id, :bill_id::text, :contact_ref"}})[
        0].parameters == ["bill_id", "contact_ref"]
