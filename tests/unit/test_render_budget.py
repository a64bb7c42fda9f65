"""The render budget on every evaluation step, the memory budget, bounded parsing, the
tracking rewrite and messages in the product's words (issue 11, items 10-14), in process.

The limits are set small here so each refusal comes quickly; the hostile corpus
(:mod:`tests.unit.test_hostile_corpus`) runs the larger payloads in a child process.
"""

from __future__ import annotations

import html
import re

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from comms_pipeline.pipeline.template_files import BUILTIN_DIR
from comms_pipeline.pipeline.tracking import Tracker
from comms_pipeline.rendering import (
    Limits,
    TemplateError,
    build_context,
    compile_template,
    velocity,
)
from comms_pipeline.rendering.sandbox import DEFAULT_LIMITS
from comms_pipeline.settings.links import LinkSettings
from comms_pipeline.settings.web import WebSettings
from tests.unit.hostile_corpus import LEAKS

FAST = Limits(timeout=0.05)


def render(source: str, params: dict | None = None, limits: Limits = FAST) -> str:
    context = build_context(contact={}, entities={}, params=params or {})
    return compile_template(source).render(context, limits=limits)


def refused(source: str, params: dict | None = None, limits: Limits = FAST) -> str:
    with pytest.raises(TemplateError) as err:
        render(source, params, limits)
    return err.value.reason


# --- item 10: the time limit holds inside one expression -------------------------------------

BIG_TEXT = {"a": "x" * 500_000, "b": "X" * 500_000}
BIG_LISTS = {"l": list(range(100_000)), "m": list(range(100_000))}


@pytest.mark.parametrize("term, params", [
    ("$param.a.equalsIgnoreCase($param.b) == true", BIG_TEXT),    # method calls
    ("$param.a.contains('zz')", BIG_TEXT),
    ("$param.l == $param.m", BIG_LISTS),                          # comparisons
    ("$param.l < $param.m", BIG_LISTS),
    ("$param.l.contains(-1)", BIG_LISTS),
])
def test_one_expression_cannot_run_past_the_time_limit(term, params) -> None:
    source = "#if(" + " || ".join([term] * 1000) + ")y#end"
    assert "rendering took longer than 0.05 s" in refused(source, params)


def test_ordinary_expressions_still_render() -> None:
    assert render("#if(" + " && ".join(["1 < 2"] * 500) + ")y#end", limits=DEFAULT_LIMITS) \
        == "y"


# --- item 11: the memory budget ---------------------------------------------------------------

@pytest.mark.parametrize("make", [
    "$param.s + $i",                     # concatenation
    "$param.s.replace('x', \"$i\")",     # a method's result
    "$param.s.substring($i)",
    "$fmt.upper($param.s)",              # a helper's result
])
def test_distinct_values_kept_in_a_list_stop_at_the_memory_budget(make) -> None:
    source = (f"#set($l = [])#foreach($i in [1..2000])#set($v = {make})"
              "#set($l = $l + [$v])#end$l.size()")
    small = Limits(timeout=30, max_memory=2 * 1024 * 1024)
    assert "holds more than 2 MB of values" in refused(source, {"s": "x" * 10_000}, small)
    assert render(source, {"s": "x" * 10}, small) == "2000"  # small values fit


def test_the_memory_budget_is_configurable_with_a_sensible_default() -> None:
    assert 16 * 1024 * 1024 <= DEFAULT_LIMITS.max_memory <= 32 * 1024 * 1024
    source = ("#set($l = [])#foreach($i in [1..100])#set($v = $param.s + $i)"
              "#set($l = $l + [$v])#end$l.size()")
    assert "MB of values" in refused(source, {"s": "x" * 100_000},
                                     Limits(timeout=30, max_memory=1024 * 1024))
    assert render(source, {"s": "x" * 100_000}, Limits(timeout=30)) == "100"


def test_values_set_anew_are_no_longer_held() -> None:
    """The budget is of what a render holds: a variable set anew frees its old value, so
    building a list or a text step by step, or making many large values one after the other,
    stays within it."""
    roomy = Limits(timeout=30)
    assert render("#set($l = [])#foreach($i in [1..9000])#set($l = $l + [$i])#end$l.size()",
                  limits=roomy) == "9000"
    assert len(render('#set($s = "")#foreach($i in [1..10000])#set($s = $s + "xx")#end$s',
                      limits=roomy)) == 20_000
    assert render('#set($v = "")#foreach($i in [1..2000])#set($v = $param.s + $i)#end'
                  "$v.length()", {"s": "x" * 100_000}, roomy) == "100004"
    assert render("#foreach($i in [1..2000])#set($w = $param.s + $i)$w.length() #end",
                  {"s": "x" * 100_000}, roomy).split()[-1] == "100004"  # loop-local values


# --- item 12: bounded parsing -----------------------------------------------------------------

def test_an_unclosed_comment_is_refused_where_it_starts() -> None:
    with pytest.raises(TemplateError) as err:
        compile_template("Dear #contact_information.name,\n  #* a note " + "#* " * 20_000)
    assert "never closed" in err.value.reason
    assert (err.value.line, err.value.column) == (2, 3)
    with pytest.raises(TemplateError, match="never closed"):
        compile_template("a #* b " * 68_000)  # 476 KB: refused in one pass


def test_closed_and_escaped_comments_still_parse() -> None:
    assert render("a#* note *#b #*#* two *#c ## line #* x\nd") == "ab c d"
    assert render("price \\#* not a comment") == "price #* not a comment"


def test_parsing_is_capped(monkeypatch) -> None:
    monkeypatch.setattr(velocity, "MAX_PARSE_TRIES", 20_000)
    with pytest.raises(TemplateError, match="too complex to read"):
        compile_template("#if(" * 10_000)


def test_real_templates_parse_well_within_the_cap() -> None:
    dense = ("#set($x = $a.b($c, [1,2,{'a': $d}]) + 1)#if($x == 2 && !$y)$x#{else}$z#end"
             "<p>Dear #contact_information.name</p>\n")
    compile_template(dense * (velocity.MAX_SOURCE_CHARS // len(dense) // 2))
    for path in BUILTIN_DIR.rglob("*.html"):
        compile_template(path.read_text(encoding="utf-8"), html=True)


# --- item 13: the tracking rewrite ------------------------------------------------------------

_OLD_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(?:"([^"]*)"|'([^']*)')""", re.I | re.S)


class _Settings:
    web = WebSettings(tracking="all", tracking_base_url="https://t.example.com")
    links = LinkSettings(secret="budget-test")
    var_dir = None


def _old_urls(body: str) -> list[str]:
    """The destinations the old regex rewrote (quadratic, kept here as the reference)."""
    found = []
    for m in _OLD_HREF.finditer(body):
        url = html.unescape(m.group(2) if m.group(2) is not None else m.group(3)).strip()
        if url.lower().startswith(("http://", "https://")) and not url.startswith(
                ("http://127.0.0.1:8000/links", "https://t.example.com/t/")):
            found.append(url)
    return found


FRAGMENTS = st.sampled_from(['<a ', '<a href="https://e.x/1">', "<a href='http://e.x/2'>",
                             '<A HREF = "https://e.x/3" >', 'href="https://e.x/4"', '>', '"',
                             "'", '<abbr href="https://e.x/5">', '<a title="x>y" href="https://'
                             'e.x/6">', '<a href="mailto:a@b">', ' text ', '</a>', '<a\nhref="'
                             'https://e.x/7">', '<a href="https://e.x/&amp;8">'])


@hsettings(max_examples=300, deadline=None, database=None)
@given(st.lists(FRAGMENTS, max_size=30))
def test_the_rewrite_finds_the_links_the_old_pattern_found(parts) -> None:
    body = "".join(parts)
    tracked = Tracker(_Settings()).rewrite(1, body)
    assert [link["url"] for link in tracked.links] == _old_urls(body)
    assert tracked.html.count("https://t.example.com/t/c/") == len(tracked.links)


def test_thousands_of_unclosed_anchors_are_one_pass() -> None:
    body = "<a " * 30_000 + 'href="https://e.x/">x</a>' + '<a href="' * 20_000
    tracked = Tracker(_Settings()).rewrite(1, body)
    assert [link["url"] for link in tracked.links] == ["https://e.x/"]


# --- item 14: messages in the product's words -------------------------------------------------

@pytest.mark.parametrize("source, params, expected", [
    ('$fmt.truncate("abcdef", 2, [$fmt])', {}, None),
    ("$fmt [$fmt] {'k': $fmt} $fmt.join([$fmt], $fmt)", {}, None),
    ("$fmt.money($param.amount)", {"amount": "NaN"}, "not a usable number: 'NaN'"),
    ("$fmt.money($param.amount)", {"amount": "Infinity"}, "not a usable number"),
    ("$fmt.number($param.amount)", {"amount": "1e999999999"}, "not a usable number"),
    ('$fmt.number(1, "x")', {}, "decimals must be a whole number"),
    ("$fmt.number(1, [1])", {}, "decimals must be a whole number"),
    ('$fmt.number(1, "' + "1" * 5000 + '")', {}, "decimals must be a whole number"),
    ('$fmt.truncate("abc", "' + "9" * 5000 + '")', {}, "length must be a whole number"),
    ("$fmt.money($fmt)", {}, "not a number: a helper"),
    ('#set($s = "abc")$s.substring("x")', {}, "wrong kind"),
    ('#set($s = "abc")$s.isEmpty(1)', {}, "wrong number"),
    ("#set($x = 1 / 0)$x", {}, "division by zero"),
    ('#if(1 < "x")y#end', {}, "'<' cannot compare a number and text"),
    ("#set($m = {[1]: 2})$m", {}, "a map key must be"),
    ("#set($n = 5)$n.substring(1)", {}, "not allowed on a number"),
    ("#foreach($x in 5)$x#end", {}, "cannot loop over a number"),
    ("#set($l = [1])$l[$fmt]", {}, "whole number, not a helper"),
    ("#set($x = 9" + "9" * 5000 + ")$x", {}, "a number in the template is too large"),
])
def test_messages_and_output_never_show_python(source, params, expected) -> None:
    try:
        text = render(source, params, DEFAULT_LIMITS)
    except TemplateError as exc:
        text = exc.reason
        assert expected is not None, text
        assert expected in text
    else:
        assert expected is None, text
    for leak in LEAKS:
        assert leak not in text, text


def test_values_made_only_to_be_written_are_not_held() -> None:
    limits = Limits(timeout=30, max_output=20_000_000, max_memory=2 * 1024 * 1024)
    # 100 values of 100 KB: 10 MB made, never more than one held at a time.
    out = render("#foreach($i in [1..100])$fmt.upper($param.s)#end", {"s": "x" * 100_000},
                 limits)
    assert len(out) == 10_000_000
