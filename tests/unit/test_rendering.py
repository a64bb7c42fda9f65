"""Rendering: the seeds' tags, Velocity through airspeed, escaping, context and caching."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from comms_pipeline.rendering import (
    TemplateError,
    build_context,
    compile_template,
)
from comms_pipeline.rendering.tags import translate

CONTACT = {"id": 7, "ref": "C-1001", "name": "Maria Georgiou", "preferred_language": "en",
           "data": {"email": "maria@example.com"}}


def render(source, entities=None, params=None, referring=None, html=False, contact=CONTACT,
           language=None):
    context = build_context(contact=contact, entities=entities or {}, params=params or {},
                            referring_entities=referring, language=language)
    return compile_template(source, html=html).render(context)


def test_seed_tags_render_including_nested_paths():
    entities = {"payment": {"number": "P-1", "amount": "42.50",
                            "accounts_receivable": {"balance": "-42.50", "number": "AR-1"}}}
    out = render("Dear #contact_information.name, payment #payment.number for $#payment.amount "
                 "(€#payment.amount). Balance:#payment.accounts_receivable.balance.",
                 entities, referring=["payment"])
    assert out == ("Dear Maria Georgiou, payment P-1 for $42.50 (€42.50). Balance:-42.50.")


def test_a_tag_of_an_entity_not_referring_renders_empty_also_nested():
    entities = {"payment": {"number": "P-1", "accounts_receivable": {"balance": "5"}},
                "bill": {"number": "B-1"}}
    out = render("[#bill.number][#payment.number][#payment.accounts_receivable.balance]",
                 entities, referring=["bill"])
    assert out == "[B-1][][]"


def test_related_entities_given_side_by_side_fill_nested_tags():
    entities = {"payment": {"number": "P-1"}, "accounts_receivable": {"balance": "9.00"}}
    out = render("#payment.accounts_receivable.balance / [#accounts_receivable.balance]",
                 entities, referring=["payment"])
    assert out == "9.00 / []"


def test_missing_tags_render_empty_but_velocity_references_keep_their_text():
    out = render("[#subscription.number] [$subscription.number] [$!subscription.number]")
    assert out == "[] [$subscription.number] []"


def test_hash_text_that_is_not_a_tag_is_left_alone():
    source = ("color: #ff0000; page.html#section.two \\#section.two &#8364; #1.5 "
              "#if(true)yes#end.Next ## a comment\nend")
    assert render(source) == ("color: #ff0000; page.html#section.two #section.two &#8364; "
                              "#1.5 yes.Next end")


def test_full_velocity_syntax():
    entities = {"notification": {"number": "N-9", "bills_notified_amount": [
        {"number": "B-1", "amount": 10}, {"number": "B-2", "amount": 20.5}]}}
    source = ("#set($total = 0)"
              "#foreach($b in $notification.bills_notified_amount)"
              "$foreach.count. $b.number#if($foreach.hasNext), #end"
              "#set($total = $total + $b.amount)#end"
              " = $total"
              "#macro(greet $who)Hello $who!#end #greet($contact_information.first_name)"
              "#if($notification.number == 'N-9') ok#elseif(false) no#else never#end")
    assert render(source, entities) == "1. B-1, 2. B-2 = 30.5 Hello Maria! ok"


def test_values_display_as_text():
    entities = {"subscription": {"services": ["TV Basic", "Sports"], "active": True,
                                 "note": None, "fee": Decimal("9.90"),
                                 "since": date(2024, 9, 1)}}
    out = render("#subscription.services|#subscription.active|#subscription.note|"
                 "#subscription.fee|#subscription.since", entities)
    assert out == "TV Basic, Sports|true||9.90|2024-09-01"


def test_html_bodies_escape_every_value_but_not_the_authors_markup():
    entities = {"bill": {"number": "<B&1>"}}
    params = {"note": "Tom & \"Jerry\""}
    source = ("<p class=\"x\">#bill.number $param.note</p>"
              "#set($br = '<br>')$br#set($i = \"<i>$bill.number</i>\")$i")
    out = render(source, entities, params, html=True)
    assert out == ("<p class=\"x\">&lt;B&amp;1&gt; Tom &amp; &quot;Jerry&quot;</p>"
                   "<br><i>&lt;B&amp;1&gt;</i>")
    assert render("#bill.number $param.note", entities, params) == "<B&1> Tom & \"Jerry\""
    # A #define block used as a value is markup already: its values escaped once, not twice.
    defined = render("#define($b)<i>$param.note</i>#end$b", entities, params, html=True)
    assert defined == "<i>Tom &amp; &quot;Jerry&quot;</i>"


def test_render_flag_overrides_the_compiled_mode():
    compiled = compile_template("#param.v")
    context = build_context(contact=CONTACT, entities={}, params={"v": "<b>"})
    assert compiled.render(context) == "<b>"
    assert compiled.render(context, html=True) == "&lt;b&gt;"


def test_compiled_once_and_cached():
    source = "Hello #contact_information.name, cached"
    assert compile_template(source) is compile_template(source)
    assert compile_template(source, html=True) is not compile_template(source)
    assert compile_template(source).velocity_source == (
        "Hello $!{contact_information.name}, cached")


def test_syntax_errors_give_the_authors_line_and_column():
    source = ("Hi #contact_information.name #contact_information.name\n"
              "ab #contact_information.name #set($a = )")
    with pytest.raises(TemplateError) as err:
        compile_template(source)
    assert (err.value.line, err.value.column) == (2, 40)
    assert "expected expression" in str(err.value)


def test_render_errors_give_the_authors_position():
    with pytest.raises(TemplateError) as err:
        render("#contact_information.name\n  #contact_information.name $fmt.money('abc')")
    assert (err.value.line, err.value.column) == (2, 29)
    assert "not a number" in str(err.value)


def test_translation_maps_positions_back():
    t = translate("ab #x.y cd #p.q.r e")
    assert t.source == "ab $!{x.y} cd $!{p.q.r} e"
    assert [p for p, _ in t.tags] == ["x.y", "p.q.r"]
    assert t.original_offset(t.source.index("cd")) == 8
    assert t.original_offset(t.source.index(" e")) == 17


def test_context_is_a_plain_copy_with_the_contacts_view():
    entities = {"payment": {"number": "P-1", "_private": 1}, "bill": {"number": "B-1"}}
    context = build_context(contact=CONTACT, entities=entities, params={"a": 1},
                            referring_entities=["payment"])
    assert set(context) == {"payment", "contact_information", "param", "fmt", "dynamic_link"}
    assert context["payment"] == {"number": "P-1"}
    person = context["contact_information"]
    assert (person["first_name"], person["last_name"], person["number"], person["email"]) == (
        "Maria", "Georgiou", "C-1001", "maria@example.com")
    context["payment"]["number"] = "changed"
    assert entities["payment"]["number"] == "P-1"


@pytest.mark.parametrize("language, expected", [
    ("en", "€1,234.50 | 5 Oct 2024 | 5 October 2024 | 05/10/2024 | 12.5% | yes"),
    ("el", "1.234,50 € | 5 Οκτ 2024 | 5 Οκτωβρίου 2024 | 5/10/2024 | 12,5% | ναι"),
    ("de", "1.234,50 € | 5. Okt. 2024 | 5. Oktober 2024 | 05.10.2024 | 12,5 % | ja"),
    ("xx", "€1,234.50 | 5 Oct 2024 | 5 October 2024 | 05/10/2024 | 12.5% | yes"),
])
def test_formatters_follow_the_language(language, expected):
    source = ("$fmt.money(1234.5, 'EUR') | $fmt.date('2024-10-05') | "
              "$fmt.date('2024-10-05', 'long') | $fmt.date('2024-10-05', 'short') | "
              "$fmt.percent(0.125, 1) | $fmt.yesno(true)")
    assert render(source, language=language) == expected


def test_formatters_with_the_contacts_language_and_missing_values():
    contact = dict(CONTACT, preferred_language="el")
    out = render("$fmt.money($payment.amount, 'USD')|$fmt.money($bill.amount)|"
                 "$fmt.date($bill.due)|$fmt.number(-1234567.891)|$fmt.money(5, 'JPY')",
                 {"payment": {"amount": "-3.5"}}, contact=contact)
    assert out == "-3,50 $|||-1.234.567,89|5 JP¥"


@pytest.mark.parametrize("language, expected", [
    ("el", "Νοεμβρίου 2026 | 1 Δεκεμβρίου 2026 | 25,00 € | September 2024"),
    ("en", "November 2026 | 1 December 2026 | €25.00 | September 2024"),
])
def test_months_dates_and_amounts_come_from_babel_in_the_contacts_language(language,
                                                                          expected):
    """The CLDR's words, not a table of ours: the Greek genitive month, the euro after."""
    source = ("$fmt.month('2026-11') | $fmt.date('2026-12-01', 'long') | "
              "$fmt.money('25', 'EUR') | $fmt.month('September 2024')")
    assert render(source, language=language) == expected


def test_formatters_reject_bad_input_with_a_template_error():
    with pytest.raises(TemplateError, match="not an ISO date"):
        render("$fmt.date('yesterday')")


def test_missing_data_is_named_and_optional_values_are_marked_explicitly():
    """Under a required root, a missing, null or empty value (tag, $reference or $fmt value)
    is missing data; ``$fmt.default``, ``$!{...}``, ``${x|'..'}`` and ``#if`` are optional."""
    from comms_pipeline.rendering import MissingDataError, required_roots

    entities = {"bill": {"number": "B-1", "name": "", "lines": [], "due": None},
                "payment": {"number": None}}
    context = build_context(contact=CONTACT, entities=entities, params={},
                            referring_entities=["bill"], language="en")
    source = ("#bill.number #bill.name $bill.lines $fmt.money($bill.due) #bill.absent "
              "#param.code #payment.number #if($bill.guarded)#bill.guarded#end "
              "$fmt.default($bill.note, '-') $!{bill.quiet} ${bill.alt|'n/a'} "
              "#macro(m)#bill.in_macro#end#m() #foreach($l in $bill.lines)#bill.in_loop#end")
    result = compile_template(source).render_report(context, required=required_roots(["bill"]))
    assert result.missing == ["#bill.name", "#bill.lines", "#bill.due", "#bill.absent",
                              "#param.code", "#bill.in_macro"]
    assert "B-1" in result.text and "- " in result.text and "n/a" in result.text
    with pytest.raises(MissingDataError, match="^missing: #bill.name, #bill.lines"):
        compile_template(source).render(context, required=required_roots(["bill"]))
    assert compile_template(source).render(context).startswith("B-1")  # no check: as before
