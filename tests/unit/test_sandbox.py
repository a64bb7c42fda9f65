"""The injection corpus: template bodies and unrestricted values that must not execute or leak.

Each payload is rendered through the pipeline's path (``build_context`` + compiled template);
it must either be refused with a ``TemplateError`` or render without leaking anything of
Python (no ``<class``, no ``function``, no module, no secret), without changing the caller's
data and without touching the file system. A control renders the worst payloads with bare
airspeed to show they are real attacks there.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from types import MappingProxyType

import airspeed
import pytest

from comms_pipeline.pipeline.links import LinkBuilder
from comms_pipeline.rendering import Limits, TemplateError, build_context, compile_template
from comms_pipeline.settings.links import LinkSettings

CANARY = Path("/tmp/comms-sandbox-canary")
LEAKS = ("<class", "<function", "<module", "<built-in", "<bound", "object at 0x", "__",
         "builtins", "s3cret-link-key", "mappingproxy", "Traceback")

ATTACKS = [
    "$contact_information.__class__",
    "${contact_information.__class__}",
    "$!{contact_information.name.__class__.__mro__}",
    "${contact_information.name.__class__.__mro__[1].__subclasses__()}",
    "$contact_information.name.__init__.__globals__",
    "${x.__init__.__globals__}",
    "#set($a = $contact_information.__class__.__mro__)$a",
    "#set($a = $contact_information.name.__class__)$a.__name__",
    "#set($__builtins__ = 1)$__builtins__",
    "$contact_information['__class__']",
    "#set($k = '__class__')$contact_information[$k]",
    "$contact_information.name.format('{0.__class__}')",
    "$contact_information.name.getClass().forName('java.lang.Runtime')",
    "$contact_information.name.class.name",
    "$contact_information.name.encode('utf-8')",
    "$contact_information.name.replaceAll('(a+)+$', 'x')",
    "$contact_information.name.matches('(a+)+$')",
    "$contact_information.name.split(',')",
    "$param.clear()",
    "$params.clear()",
    "$param.pop('promo')",
    "$param.update({'promo': 'hacked'})",
    "#set($param.promo = 'hacked')",
    "$param.put('promo', 'hacked')",
    "$payment.items()",
    "$payment.keys()",
    "$payment._secret",
    "$payment.get('_secret')",
    "#foreach($k in $payment)$k=$payment[$k];#end",
    "$fmt.__class__",
    "$fmt.__init__.__globals__",
    "$fmt.locale",
    "$fmt.money.__globals__",
    "$fmt.money($payment.amount, '{0.__class__}')",
    "$fmt.date('2024-01-01', '{y.__class__}')",
    "$fmt._decimal(1)",
    "$dynamic_link._builder._secret",
    "$dynamic_link.keys()",
    "$dynamic_link.__getitem__('opt_out_direct_marketing')",
    "#evaluate('$contact_information.__class__')",
    "#evaluate($param.code)",
    "#include('/etc/passwd')",
    "#parse('/etc/passwd')",
    "$x.__init__.__globals__['os'].system('touch /tmp/comms-sandbox-canary')",
    "#set($os = $x.__class__.__mro__[1].__subclasses__())$os",
    "${contact_information.name.__class__.__base__.__subclasses__()}",
    "#set($s = 'x' * 100000000)$s",
    "#set($s = '%s%s' % 'ab')$s",
    "#set($s = '%(a)s')#set($t = $s % {'a': 1})$t",
    "#set($n = 2)#foreach($i in [1..200])#set($n = $n * $n)#end$n",
    "#foreach($i in [1..100000000])x#end",
    "#set($s = 'ab')#foreach($i in [1..64])#set($s = $s + $s)#end$s.length()",
    "#set($l = [1])#foreach($i in [1..64])#set($l = $l + $l)#end$l.size()",
    "#macro(r $n)#r($n)#end#r(1)",
    "#macro(b $n)#b($n)#b($n)#end#b(1)",
    "#define($d)$d#end$d",
    "#if(true)" * 400 + "x" + "#end" * 400,
    "#macro(w)#foreach($i in [1..9000])#end#end#foreach($j in [1..9000])#w()#end",
    "$velocityCount.__class__",
    "#foreach($i in [1..2])$foreach.__class__#end",
    "#set($m = {'__class__': 1})$m.get('__class__')",
    "#set($m = {'a': 1})#set($m.a = 2)$m",
    "#set($s = 'x')#foreach($i in [1..17])#set($s = $s + $s)#end"
    "#set($l = [" + ", ".join(["$s"] * 400) + "])$fmt.join($l, $s)$l",
    "$fmt.number('1e100000', 0)",
    # shared parts: a few bytes that stand for a billion values to compare or print
    "#set($a=[1])#set($b=[1])#foreach($i in [1..28])#set($a=[$a,$a])#set($b=[$b,$b])#end"
    "#if($a == $b)x#end",
    "#set($m={'a':1})#foreach($i in [1..28])#set($m={'x':$m,'y':$m})#end#if($m == $m)x#end",
    "#set($a=[1])#foreach($i in [1..28])#set($a=[$a,$a])#end$a.contains([1])$a",
]


@pytest.fixture
def data():
    return {
        "contact": {"ref": "C-1", "name": "Maria", "preferred_language": "en"},
        "entities": {"payment": {"number": "P-1", "amount": 12.5, "_secret": "hidden",
                                 "lines": ["a", "b"]}},
        "params": {"promo": "SUMMER", "code": "$contact_information.__class__"},
    }


def _context(data):
    builder = LinkBuilder(LinkSettings(), "s3cret-link-key")
    return build_context(contact=data["contact"], entities=data["entities"],
                         params=data["params"], links=builder)


@pytest.mark.parametrize("html", [False, True], ids=["text", "html"])
@pytest.mark.parametrize("payload", ATTACKS)
def test_attack_is_refused_or_harmless(payload, html, data):
    before = copy.deepcopy(data)
    context = _context(data)
    small = Limits(max_output=200_000, timeout=1.0)
    try:
        out = compile_template(payload, html=html).render(context, limits=small)
    except TemplateError as exc:
        assert str(exc), "a refusal says why"
        out = ""
    for leak in LEAKS:
        assert leak not in out, f"{payload!r} leaked {leak!r}: {out[:200]!r}"
    assert len(out) < 200_000
    assert data == before, "the caller's data must not change"
    assert context["param"] == {"promo": "SUMMER", "code": "$contact_information.__class__"}
    assert not CANARY.exists()


def test_payloads_are_real_attacks_in_bare_airspeed():
    """Control: without the sandbox the same payloads reach Python internals and mutate."""
    params = {"promo": "SUMMER"}
    namespace = {"contact_information": {"name": "Maria"}, "param": params}
    out = airspeed.Template("${contact_information.name.__class__.__mro__}").merge(namespace)
    assert "<class 'str'>" in out
    airspeed.Template("#set($x = $param.clear())").merge(namespace)
    assert params == {}


def test_refusals_name_the_problem(data):
    context = _context(data)
    cases = {
        "$contact_information.__class__": "names beginning with '_'",
        "$contact_information.name.format('x')": "method format() is not allowed",
        "#evaluate($param.code)": "#evaluate is not allowed",
        "#foreach($i in [1..100000000])x#end": "too large",
        "#macro(r $n)#r($n)#end#r(1)": "nested deeper",
        "#set($s = 'x' * 3)": "'*' needs two numbers",
        "#set($m = {'a': 1})#set($m.a = 2)": "#set can only assign a variable",
    }
    for payload, reason in cases.items():
        with pytest.raises(TemplateError, match=re.escape(reason)):
            compile_template(payload).render(context)


def test_helper_arguments_are_never_format_strings(data):
    out = compile_template("$fmt.join($payment.lines, '{0.__class__}')").render(_context(data))
    assert out == "a{0.__class__}b"


def test_render_time_is_capped(data):
    nested = "#foreach($i in [1..10000])#foreach($j in [1..10000])#end#end"
    with pytest.raises(TemplateError, match="longer than"):
        compile_template(nested).render(_context(data), limits=Limits(timeout=0.2))


def test_output_size_is_capped(data):
    body = "#foreach($i in [1..10000])$contact_information.name and more text#end"
    with pytest.raises(TemplateError, match="output exceeds 1000 characters"):
        compile_template(body).render(_context(data), limits=Limits(max_output=1000))


@pytest.mark.parametrize("value", [
    "#set($x = 1)$x", "$contact_information.__class__", "${x.__init__.__globals__}",
    "#evaluate('$x')", "#foreach($i in [1..100000000])x#end", "#macro(m)#m()#end#m()",
    "<script>alert('x')</script>", "#if(true)yes#end", "\\$escaped #end #else",
])
def test_unrestricted_values_are_data_never_code(value, data):
    data["params"] = {"v": value}
    data["entities"]["payment"]["number"] = value
    context = _context(data)
    text = compile_template("[#param.v] [$param.v] [#payment.number]").render(context)
    assert text == f"[{value}] [{value}] [{value}]"
    html_out = compile_template("<p>#param.v|$param.v</p>", html=True).render(context)
    escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") \
        .replace('"', "&quot;").replace("'", "&#x27;")
    assert html_out == f"<p>{escaped}|{escaped}</p>"


def test_a_value_claiming_to_be_safe_html_is_still_escaped(data):
    from comms_pipeline.rendering import SafeHtml

    data["params"] = {"v": SafeHtml("<img src=x onerror=alert(1)>")}
    out = compile_template("#param.v", html=True).render(_context(data))
    assert out == "&lt;img src=x onerror=alert(1)&gt;"


def test_context_holds_plain_data_only(data):
    class Sneaky:
        def __str__(self) -> str:
            return "sneaky"

    class Number(int):
        def format(self) -> str:
            return "a method a template must not reach"

    data["entities"]["payment"]["obj"] = Sneaky()
    data["entities"]["payment"]["tuple"] = (1, 2)
    data["entities"]["payment"]["number"] = Number(5)
    data["entities"]["payment"]["view"] = MappingProxyType({"a": {1: b"x"}})
    context = _context(data)
    payment = context["payment"]
    assert payment["obj"] == "sneaky"
    assert payment["tuple"] == [1, 2]
    assert type(payment["number"]) is int
    assert payment["view"] == {"a": {"1": "x"}}
    assert "_secret" not in payment


def test_lists_built_from_shared_parts_are_sized_by_what_they_hold():
    """Comparing two such lists would take hours: they are refused when built, by size."""
    payload = ("#set($a=[1])#set($b=[1])#foreach($i in [1..28])#set($a=[$a,$a])"
               "#set($b=[$b,$b])#end#if($a == $b)x#end")
    with pytest.raises(TemplateError, match="more than 10000 values in all"):
        compile_template(payload).render({})
    assert compile_template("#set($a=[[1,2],[3]])$a.size() $a.get(0).size()").render({}) == "2 2"
