"""Validation at save, the auto-complete tag list and the missing unrestricted parameters."""

from __future__ import annotations

from comms_pipeline.core.template_spec import TemplateSpec, VariantSpec
from comms_pipeline.rendering import available_tags, missing_params, validate_template
from comms_pipeline.settings.links import LinkSettings


def messages(problems, severity="error"):
    return [(p.line, p.column, p.message) for p in problems if p.severity == severity]


def test_a_good_template_has_no_problems():
    source = ("Dear #contact_information.name, #payment.number "
              "$fmt.money($payment.amount, 'EUR') #payment.accounts_receivable.balance "
              "#set($x = 1)$x #foreach($i in [1..2])$i#end #param.anything "
              "#dynamic_link.opt_out_direct_marketing")
    assert validate_template(source, referring_entities=["payment"]) == []


def test_syntax_error_with_line_and_column():
    problems = validate_template("line one\nline #contact_information.name #set($a = )")
    assert messages(problems) == [
        (2, 42, "syntax error: expected expression in set directive, got: ) ...")]


def test_unknown_entities_and_fields():
    source = "#foo.bar\n#payment.amout #contact_information.nmae $payment.numbr"
    problems = validate_template(source, referring_entities=["payment"])
    assert messages(problems) == [
        (1, 1, "#foo.bar: unknown entity 'foo'"),
        (2, 1, "#payment.amout: unknown field 'amout' of 'payment'"),
        (2, 16, "#contact_information.nmae: unknown field 'nmae' of 'contact_information'"),
        (2, 42, "#payment.numbr: unknown field 'numbr' of 'payment'"),
    ]


def test_referring_entity_outside_the_catalogue_has_free_fields():
    assert validate_template("#loyalty_card.tier", referring_entities=["loyalty_card"]) == []
    assert validate_template("#payment.anything", referring_entities=["payment"],
                             extra_fields={"payment": ["anything"]}) == []


def test_known_entity_not_referring_is_a_warning():
    problems = validate_template("#bill.number", referring_entities=["payment"])
    assert messages(problems) == []
    assert messages(problems, "warning") == [
        (1, 1, "#bill.number: 'bill' is not among the referring entities, so this renders "
               "empty")]


def test_dynamic_links_must_be_enabled():
    source = ("#dynamic_link.opt_out_direct_marketing\n"
              "#dynamic_link.service_request_final_resolution_acceptance "
              "$dynamic_link.service_request_temporary_resolution_acceptance "
              "#dynamic_link.win_a_prize")
    problems = validate_template(source)
    assert messages(problems) == [
        (2, 1, "dynamic link tag #dynamic_link.service_request_final_resolution_acceptance "
               "is not enabled"),
        (2, 59, "dynamic link tag #dynamic_link.service_request_temporary_resolution_acceptance"
                " is not enabled"),
        (2, 121, "#dynamic_link.win_a_prize: unknown dynamic link"),
    ]
    everything = LinkSettings(enabled=["service_request_final_resolution_acceptance",
                                       "service_request_temporary_resolution_acceptance"])
    assert len(messages(validate_template(source, links=everything))) == 2


def test_sandbox_refusals_are_found_at_save():
    source = "$contact_information.__class__ $contact_information.name.format(1) $fmt.money(1)"
    assert messages(validate_template(source)) == [
        (1, 22, "names beginning with '_' are not allowed ('__class__')"),
        (1, 58, "method format() is not allowed in templates"),
    ]


def test_private_names_in_set_and_foreach_are_found_at_save():
    problems = validate_template("#set($__x = 1)\n#foreach($_i in [1..2])#end")
    assert messages(problems) == [
        (1, 1, "names beginning with '_' are not allowed ('__x')"),
        (2, 1, "names beginning with '_' are not allowed ('_i')"),
    ]


def test_sms_text_over_the_limit():
    long_text = "Your payment #payment.number " + "was received. " * 12
    problems = validate_template(long_text, media="sms", referring_entities=["payment"])
    assert len(problems) == 1
    assert "sms text is at least 182 characters" in problems[0].message
    assert "the limit is 160" in problems[0].message
    assert validate_template(long_text, media="sms", max_chars=400) == []


def _spec(**changes):
    spec = TemplateSpec(
        code="PAY", name="Payment", media="email", referring_entities=["payment"],
        unrestricted_params=["promo"],
        variants=[VariantSpec("en", "Receipt #payment.number", "<p>#param.promo</p>",
                              "#param.extra #param.promo")])
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec


def test_spec_validation_names_the_part():
    problems = validate_template(_spec(variants=[
        VariantSpec("en", "Receipt #payment.numbr", "<p>#if(</p>#end", "ok"),
        VariantSpec("el", "Απόδειξη", None, "#dynamic_link.win")]))
    assert [(p.part, p.line, p.column) for p in problems if p.is_error] == [
        ("en.subject", 1, 9), ("en.html", 1, 12), ("el.txt", 1, 1)]


def test_spec_header_problems():
    problems = validate_template(_spec(code="bad code!", media="fax", default_language="fr",
                                       referring_entities=["ok", "not ok"]))
    text = [p.message for p in problems]
    assert "code 'bad code!' must be 1-64 letters, digits, '_', '.' or '-'" in text
    assert "media 'fax' is not one of email, sms, push, external, letter" in text
    assert "'not ok' is not a valid entity or parameter name" in text
    assert "no variant in the default language 'fr'" in text
    no_subject = validate_template(_spec(variants=[VariantSpec("en", None, "<p>x</p>")]))
    assert [p.message for p in no_subject] == ["en: an email needs a subject"]
    two_lines = validate_template(_spec(variants=[VariantSpec("en", "a\nBcc: x", "<p>x</p>")]))
    assert [p.message for p in two_lines] == ["en: a subject must be a single line"]


def test_undeclared_parameter_is_a_warning():
    problems = validate_template(_spec())
    assert [(p.part, p.message, p.severity) for p in problems] == [
        ("en.txt", "parameter 'extra' is not declared in unrestricted_params", "warning")]


def test_missing_params_lists_declared_and_used_ones_not_given():
    spec = _spec()
    assert missing_params(spec, {}) == ["promo", "extra"]
    assert missing_params(spec, {"promo": "x"}) == ["extra"]
    assert missing_params(spec, ["promo", "extra"]) == []
    assert missing_params("$param.b #param.a #param.b", {}) == ["b", "a"]


def test_available_tags_for_autocomplete():
    tags = available_tags(["payment"])
    assert "#payment.number" in tags
    assert "#payment.accounts_receivable.balance" in tags
    assert "#payment.accounts_receivable.wallet.balance" in tags
    assert "#contact_information.name" in tags
    assert "#bill.number" not in tags
    assert tags == sorted(tags)
    assert available_tags(["payment"], "#payment.acc") == [
        t for t in tags if t.startswith("#payment.acc")]
    assert available_tags([], "dynamic_link.opt_out", enabled_links=[
        "opt_out_direct_marketing"]) == ["#dynamic_link.opt_out_direct_marketing"]
    assert available_tags(["bill"], "#BILL.DUE") == ["#bill.due_date"]
