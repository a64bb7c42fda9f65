"""A growing corpus of hostile templates and values, and the child process that runs it.

Each :class:`Payload` is something a template author, an external system or a red team could
hand the pipeline: a template source (run through ``validate_template`` as ``comms templates
add`` does, then rendered), a parameter value, an HTML body for the tracking link rewrite or a
subject for the message builder. The product must stop each one within its budgets: a render
either succeeds or fails with a ``TemplateError`` whose message is in the product's words, a
parse is bounded, the tracking rewrite is linear and a header stays one header.

``python -m tests.unit.hostile_corpus`` runs every payload in this process under an address
space limit and writes one JSON line per payload (outcome, message, peak RSS growth and the
seconds it took, for information); :mod:`tests.unit.test_hostile_corpus` starts it and
asserts the budgets. Add new payloads at the end of :data:`PAYLOADS`.
"""

from __future__ import annotations

import base64
import json
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

#: A render's limits in the corpus: the product's, with a shorter time limit so the corpus
#: stays fast (the limit is configuration; what is tested is that it holds).
RENDER_TIMEOUT = 0.25
ROOMY = 10.0
PARSE_TRIES = 300_000
PARSE_TIMEOUT = 5.0
#: Per payload: stopped within this many seconds (a hang guard, far above the limits).
PAYLOAD_SECONDS = 15
#: Per payload: peak RSS may grow by at most this much (the render budget is 32 MB).
PAYLOAD_RSS_MB = 200
#: The child's address space is capped at its size at start plus this, so an unbounded
#: payload fails with MemoryError instead of taking the machine's memory.
ADDRESS_SPACE_MB = 1500

#: What must never appear in anything a template author, agent or external system sees.
LEAKS = ("<class", "<function", "<module", "<built-in", "<bound", "object at 0x", "__",
         "builtins", "Traceback", "Error:", "Exception", "decimal.", "InvalidOperation",
         "lambda", "sys.", "int()", "NoneType", "LocalNamespace", "Formatters", "SafeHtml",
         "comms_pipeline")
#: Words of the budget refusals (time, memory, size, depth, parse).
BUDGET_WORDS = ("longer than", "MB of values", "characters", "values in all", "too large",
                "too long", "nested", "too complex", "never closed", "items", "levels")


@dataclass(frozen=True)
class Payload:
    name: str
    kind: str  # "template", "html_template", "param", "tracking", "subject"
    text: str
    #: "error": must be refused; "ok": must render; "any": either, in the product's words.
    expect: str = "any"
    #: When refused, the message must contain one of these (default: any budget word).
    words: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    #: The render's time limit (memory attacks get room, so the memory budget stops them).
    #: Default: RENDER_TIMEOUT, or ROOMY for a payload that must render (a legitimate render
    #: on a loaded 2-core machine may take longer than 0.25 s; that it renders is the point).
    timeout: float | None = None

    @property
    def limit(self) -> float:
        if self.timeout is not None:
            return self.timeout
        return ROOMY if self.expect == "ok" else RENDER_TIMEOUT


def _doubled(var: str, times: int, seed: str = "x") -> str:
    """Velocity that builds ``$var`` as ``seed`` doubled ``times`` times, at render time."""
    return (f'#set(${var} = "{seed}")#foreach($i in [1..{times}])'
            f"#set(${var} = ${var} + ${var})#end")


BIG = _doubled("a", 17)  # 131,072 characters
MEG = _doubled("a", 19)  # 524,288 characters


def _nested_words(text: str, levels: int) -> str:
    for _ in range(levels):
        text = "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="
    return text


TIME = ("longer than",)
MEMORY = ("MB of values", "characters", "too long")

BIG_LISTS = {"l": list(range(200_000)), "m": list(range(200_000))}
LISTS = ("#set($l = [" + ",".join(["[1,2,3,4,5,6,7,8]"] * 300) + "])#set($m = [" +
         ",".join(["[1,2,3,4,5,6,7,8]"] * 300) + "])")

PAYLOADS: list[Payload] = [
    # --- item 10: time limit on every evaluation step ------------------------------------
    Payload("chained calls in one expression", "template",
            MEG + _doubled("b", 19, "X") + "#if(" +
            " || ".join(["$a.equalsIgnoreCase($b) == true"] * 1500) + ")y#end",
            "error", TIME),
    Payload("chained replace in one expression", "template",
            MEG + "#if(" + " && ".join(["$a.replace('x','y').contains('q') == false"] * 400)
            + ")y#end", "error", TIME + MEMORY),
    Payload("== over large lists, many times", "param",
            "#if(" + " && ".join(["$param.l == $param.m"] * 800) + ")y#end", "error", TIME,
            BIG_LISTS),
    Payload("!= over large lists, many times", "param",
            "#if(" + " || ".join(["$param.l != $param.m"] * 800) + ")y#end", "error", TIME,
            BIG_LISTS),
    Payload("< over large lists, many times", "param",
            "#if(" + " || ".join(["$param.l < $param.m"] * 800) + ")y#end", "error", TIME,
            BIG_LISTS),
    Payload("list contains() in one expression", "param",
            "#if(" + " || ".join(["$param.l.contains(-1)"] * 800) + ")y#end", "error", TIME,
            BIG_LISTS),
    Payload("== over literal lists, many times", "template",
            LISTS + "#if(" + " && ".join(["$l == $m"] * 100) + ")y#end", "any", TIME),
    Payload("big string comparisons", "template",
            MEG + _doubled("b", 19) + "#if(" + " && ".join(["$a == $b"] * 300) + ")y#end",
            "any"),
    Payload("nested loops without output", "template",
            "#foreach($i in [1..10000])#foreach($j in [1..10000])#set($k = $j)#end#end",
            "error", TIME),
    Payload("nested loops, silent references", "template",
            "#foreach($i in [1..10000])#foreach($j in [1..10000])$!nothing#end#end",
            "error", TIME),
    Payload("macro recursion", "template",
            "#macro(r $n)#r($n)#end#r(1)", "error", ("levels", "recursion", "nested")),
    Payload("macro fan-out", "template",
            "#macro(f $n)#if($n < 25)#set($m = $n + 1)#f($m)#f($m)#end#end#f(0)", "any", TIME),
    Payload("define blocks expanded in loops", "template",
            "#define($d)#foreach($i in [1..10000])#set($x = $i)#end#end"
            "#foreach($i in [1..10000])#set($y = \"$d\")#end", "error", TIME),
    Payload("keySet over and over", "template",
            "#set($m = {" + ",".join(f"'k{i}': {i}" for i in range(2000)) + "})"
            "#foreach($i in [1..10000])#set($k = $m.keySet())#end", "error", TIME + MEMORY),
    Payload("fmt.join in a loop", "template",
            "#set($l = [1..9000])#foreach($i in [1..10000])#set($s = $fmt.join($l, ','))#end",
            "error", TIME + MEMORY),
    Payload("list contains in a loop", "template",
            "#set($l = [1..9000])#foreach($i in [1..10000])#if($l.contains(-1))x#end#end",
            "any", TIME),
    Payload("arithmetic in one long expression", "template",
            "#set($n = " + " + ".join(["1 * 2 - 1"] * 500) + ")$n", "ok"),
    Payload("unary not chain", "template",
            "#if(" + " && ".join(["!false"] * 500) + ")y#end", "ok"),
    Payload("array literals in one expression", "template",
            "#if(" + " && ".join(["[1,2,3] == [1,2,3]"] * 300) + ")y#end", "ok"),
    # --- item 11: memory budget --------------------------------------------------------------
    Payload("distinct big strings kept in a list (+)", "template",
            MEG + "#set($l = [])#foreach($i in [1..5000])#set($s = $a + $i)"
            "#set($l = $l + [$s])#end$l.size()", "error", MEMORY, timeout=ROOMY),
    Payload("distinct big strings kept in a list (replace)", "template",
            BIG + "#set($l = [])#foreach($i in [1..5000])"
            "#set($s = $a.replace('x', \"$i\"))#set($l = $l + [$s])#end$l.size()",
            "error", MEMORY, timeout=ROOMY),
    Payload("distinct substrings kept", "template",
            MEG + "#set($l = [])#foreach($i in [1..5000])"
            "#set($l = $l + [$a.substring($i)])#end$l.size()", "error", MEMORY, timeout=ROOMY),
    Payload("upper/lower copies kept", "template",
            MEG + "#set($l = [])#foreach($i in [1..5000])"
            "#set($l = $l + [$a.toUpperCase(), $a.toLowerCase()])#end$l.size()",
            "error", MEMORY, timeout=ROOMY),
    Payload("fmt.upper copies kept", "template",
            MEG + "#set($l = [])#foreach($i in [1..5000])"
            "#set($l = $l + [$fmt.upper($a)])#end$l.size()", "error", MEMORY, timeout=ROOMY),
    Payload("fmt.truncate with a big ellipsis", "template",
            MEG + "#set($l = [])#foreach($i in [1..5000])"
            "#set($l = $l + [$fmt.truncate('abc', 2, $a)])#end$l.size()", "error", MEMORY,
            timeout=ROOMY),
    Payload("big values in map literals", "template",
            MEG + "#set($l = [])#foreach($i in [1..5000])#set($s = $a + $i)"
            "#set($l = $l + [{'v': $s}])#end$l.size()", "error", MEMORY, timeout=ROOMY),
    Payload("macro output kept as values", "template",
            MEG + "#macro(m)$a#end#set($l = [])#foreach($i in [1..5000])"
            "#set($l = $l + [\"#m()\"])#end$l.size()", "error", MEMORY, timeout=ROOMY),
    Payload("interpolated copies kept", "template",
            MEG + "#set($l = [])#foreach($i in [1..5000])#set($l = $l + [\"$a$i\"])#end",
            "error", MEMORY, timeout=ROOMY),
    Payload("list doubling", "template",
            "#set($l = [1])#foreach($i in [1..40])#set($l = $l + $l)#end$l.size()",
            "error", MEMORY + ("list",), timeout=ROOMY),
    Payload("nested shared lists", "template",
            "#set($l = [1])#foreach($i in [1..40])#set($l = [$l, $l])#end$l",
            "error", MEMORY + ("list",), timeout=ROOMY),
    Payload("string doubling past the output limit", "template",
            _doubled("a", 25) + "$a", "error", MEMORY, timeout=ROOMY),
    Payload("fmt.join of a big list of big strings", "template",
            MEG + "#set($l = [$a, $a, $a, $a])$fmt.join($l, $a)", "error", MEMORY, timeout=ROOMY),
    Payload("replace that grows", "template",
            MEG + "$a.replace('x', 'xxxxxxxx')", "error", MEMORY, timeout=ROOMY),
    Payload("big parameter displayed many times", "param",
            "#foreach($i in [1..10000])$param.big#end", "error", MEMORY,
            {"big": "y" * 200_000}, timeout=ROOMY),
    Payload("big parameter copied into a list", "param",
            "#set($l = [])#foreach($i in [1..5000])#set($s = $param.big + $i)"
            "#set($l = $l + [$s])#end", "error", MEMORY, {"big": "y" * 500_000},
            timeout=ROOMY),
    # --- item 12: bounded parsing ------------------------------------------------------------
    Payload("60 KB of unclosed comments", "template", "#* " * 20_000, "error",
            ("never closed",)),
    Payload("480 KB of unclosed comments", "template", "a #* b " * 68_000, "error",
            ("never closed",)),
    Payload("unclosed comments after a closed one", "template",
            "#* ok *#" + "x #*" * 20_000, "error", ("never closed",)),
    Payload("many open ifs", "template", "#if(" * 120_000, "error", ("too complex",)),
    Payload("many #{", "template", "#{" * 200_000, "error", ("too complex",)),
    Payload("many $!{", "template", "$!{" * 100_000, "error", ("syntax error",)),
    Payload("many open foreach", "template", "#foreach($a in " * 15_000, "error",
            ("too complex",)),
    Payload("deep parentheses", "template", "#set($a = " + "(" * 50_000 + "1" +
            ")" * 50_000 + ")", "error"),
    Payload("deep brackets", "template", "#set($a = " + "[" * 50_000 + "]" * 50_000 + ")",
            "error"),
    Payload("unterminated strings in calls", "template", '$a.b("x ' * 50_000, "error",
            ("syntax error",)),
    Payload("many open macros", "template", "#macro(" * 60_000, "error", ("syntax error",)),
    Payload("many line comments", "template", "## a line comment\n" * 5_000, "ok"),
    Payload("many tags", "template", "#payment.number " * 2_000, "ok"),
    Payload("tags that grow past the limit", "template", "#payment.number " * 30_000, "error",
            ("longer than",)),
    Payload("many lone dollars", "template", "$ " * 5_000, "ok"),
    Payload("many backslashes", "template", "\\" * 100_000, "ok"),
    Payload("source over the limit", "template", "x" * 600_000, "error", ("longer than",)),
    Payload("long chain of calls", "template", "$a" + ".b()" * 5000, "error"),
    Payload("long && chain", "template", "#if(" + " && ".join(["$a"] * 60_000) + ")y#end",
            "error", ("too complex",)),
    # --- item 14: messages in the product's words ----------------------------------------------
    Payload("helper inside a list as truncate's ellipsis", "template",
            '$fmt.truncate("abcdef", 2, [$fmt])', "ok"),
    Payload("helper shown", "template", "$fmt [$fmt] {'a': $fmt}", "ok"),
    Payload("helper joined", "template", "$fmt.join([$fmt, $fmt], $fmt)", "ok"),
    Payload("money of NaN", "param", "$fmt.money($param.amount)", "error", ("number",),
            {"amount": "NaN"}),
    Payload("money of Infinity", "param", "$fmt.money($param.amount)", "error", ("number",),
            {"amount": "-Infinity"}),
    Payload("money of a huge exponent", "param", "$fmt.money($param.amount)", "error",
            ("number",), {"amount": "1e999999999"}),
    Payload("number with text decimals", "template", '$fmt.number(1, "x")', "error",
            ("decimals",)),
    Payload("number with list decimals", "template", "$fmt.number(1, [1])", "error",
            ("decimals",)),
    Payload("number with 5000-digit decimals", "template",
            '$fmt.number(1, "' + "1" * 5000 + '")', "error", ("decimals",)),
    Payload("truncate with a 5000-digit length", "template",
            '$fmt.truncate("abc", "' + "9" * 5000 + '")', "error", ("length",)),
    Payload("substring with text", "template", '#set($s = "abc")$s.substring("x")', "error",
            ("kind", "values")),
    Payload("method with too many arguments", "template", '#set($s = "abc")$s.isEmpty(1)',
            "error", ("values",)),
    Payload("division by zero", "template", "#set($x = 1 / 0)$x", "error", ("division",)),
    Payload("modulo by zero", "template", "#set($x = 1 % 0)$x", "error", ("division",)),
    Payload("number compared with text", "template", '#if(1 < "x")y#end', "error",
            ("compare",)),
    Payload("list compared with a number", "template", "#if([1] > 2)y#end", "error",
            ("compare",)),
    Payload("list as a map key", "template", "#set($m = {[1]: 2})$m", "error", ("key",)),
    Payload("map as a map key", "template", "#set($m = {{}: 2})$m", "error", ("key",)),
    Payload("impossible date", "template", '$fmt.date("2024-13-45")', "error", ("date",)),
    Payload("date of a number", "template", "$fmt.date(5)", "error", ("date",)),
    Payload("date of a helper", "template", "$fmt.date($fmt)", "error", ("date",)),
    Payload("percent of a list", "template", "$fmt.percent([1])", "error", ("number",)),
    Payload("money with a numeric currency", "template", "$fmt.money(1, 5)", "error",
            ("currency",)),
    Payload("money of a helper", "template", "$fmt.money($fmt)", "error", ("number",)),
    Payload("method on a number", "template", "#set($n = 5)$n.substring(1)", "error",
            ("not allowed",)),
    Payload("foreach over a number", "template", "#foreach($x in 5)$x#end", "error",
            ("loop",)),
    Payload("range of text", "template", "#foreach($x in ['a'..'b'])$x#end", "any"),
    Payload("list index of a helper", "template", "#set($l = [1])$l[$fmt]", "error",
            ("whole number",)),
    Payload("huge integer literal", "template",
            "#set($x = 9" + "9" * 5000 + ")$x", "any"),
    Payload("huge integer arithmetic", "template",
            "#set($x = 99999999999999999999 * 99999999999999999999 * 99999999999999999999"
            " * 99999999999999999999)$x", "any"),
    Payload("number text with 100000 digits", "param", "$fmt.number($param.n)", "error",
            ("number",), {"n": "9" * 100_000}),
    Payload("minus text", "template", '#set($x = "a" - 1)$x', "error", ("numbers",)),
    Payload("plus of a map", "template", "#set($x = {} + 1)$x", "error", ("combine",)),
    Payload("macro called as a method", "template", "#macro(m)x#end$m()", "any"),
    Payload("private names", "template", "$fmt._class $a._b", "error", ("names",)),
    Payload("surrogate in a parameter", "param", "$param.s", "any", (), {"s": "x\ud800y"}),
    Payload("html: helper and lists shown", "html_template", "<p>$fmt [$fmt] {'a': $fmt}</p>",
            "ok"),
    Payload("html: markup doubling", "html_template",
            '#set($s = "<b>x</b>")#foreach($i in [1..30])#set($s = $s + $s)#end$s', "error",
            MEMORY),
    Payload("html: escaped copies kept", "html_template",
            MEG + "#set($l = [])#foreach($i in [1..5000])#set($s = \"<i>$i</i>\" + $a)"
            "#set($l = $l + [$s])#end$l.size()", "error", MEMORY, timeout=ROOMY),
    Payload("html: a parameter of markup", "html_template", "<p>$param.m</p>", "ok", (),
            {"m": "<script>alert(1)</script>" * 1000}),
    # --- item 13: the tracking link rewrite --------------------------------------------------
    Payload("30,000 unclosed <a fragments", "tracking", "<a " * 30_000, "ok"),
    Payload("30,000 <a fragments then one >", "tracking", "<a " * 30_000 + ">", "ok"),
    Payload("unterminated href quotes", "tracking", '<a href="x>' * 20_000, "ok"),
    Payload("href names without values", "tracking", "<a href=" + " " * 100_000 + ">", "ok"),
    Payload("mixed quotes", "tracking", "<a href='x\" " * 20_000 + ">", "ok"),
    Payload("nested <a in one tag", "tracking", "<a " * 20_000 + 'href="https://e.x/">x</a>',
            "ok"),
    Payload("5,000 real links", "tracking",
            "".join(f'<a href="https://e.x/{i}">l</a>' for i in range(5000)), "ok"),
    # --- item 15: headers ----------------------------------------------------------------------
    Payload("nested encoded words (6 levels)", "subject",
            _nested_words("x\r\nBcc: spy@evil.example", 6), "any"),
    Payload("lenient encoded word with a space", "subject",
            "=?utf-8?q?=3D=3Futf-8=3Fq=3Fa=3D0D=3D0ABcc:_e@x=3F=3D?=", "any"),
    Payload("encoded CR LF", "subject", "=?utf-8?q?x=0D=0ABcc:_e@x?=", "any"),
    Payload("many encoded words", "subject", "=?utf-8?q?a?= " * 5000, "any"),
    Payload("unknown charset", "subject", "=?x-none?q?a=0D=0ABcc:_e@x?=", "any"),
]


# --- the child ------------------------------------------------------------------------------

class _OverTime(BaseException):
    """Raised by the alarm when a payload runs past :data:`PAYLOAD_SECONDS`."""


def _alarm(signum: int, frame: Any) -> None:
    raise _OverTime()


def _vm_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * resource.getpagesize() / 1e6


def _run_one(payload: Payload) -> tuple[str, str]:
    """``(outcome, message)``: outcome ``ok`` or ``refused`` (the product's own refusal)."""
    from comms_pipeline.pipeline.tracking import Tracker
    from comms_pipeline.rendering import (
        Limits,
        TemplateError,
        build_context,
        compile_template,
        validate_template,
    )
    from comms_pipeline.rendering.mime import (
        HeaderInjection,
        MessageSpec,
        build_message,
        parse_mailbox,
    )

    if payload.kind == "tracking":
        settings = _TrackingSettings()
        try:
            tracked = Tracker(settings).rewrite(1, payload.text)
        except TemplateError as exc:
            return "refused", str(exc)
        return "ok", f"{len(tracked.links)} links"
    if payload.kind == "subject":
        spec = MessageSpec(sender=parse_mailbox("a@example.com"), to=parse_mailbox(
            "b@example.com"), subject=payload.text, text="hi")
        try:
            data, _ = build_message(spec)
        except HeaderInjection as exc:
            return "refused", str(exc)
        head = data.split(b"\r\n\r\n", 1)[0]
        names = {line.split(b":", 1)[0].lower() for line in head.split(b"\r\n")
                 if line[:1] not in (b" ", b"\t")}
        extra = names - {b"message-id", b"date", b"from", b"to", b"subject", b"mime-version",
                         b"content-type", b"content-transfer-encoding"}
        return ("ok" if not extra else "INJECTED"), repr(sorted(extra))
    html = payload.kind == "html_template"
    problems = validate_template(payload.text, html=html)  # what `comms templates add` runs
    errors = [p for p in problems if p.is_error]
    if errors:
        return "refused", "; ".join(p.message for p in errors)
    context = build_context(contact={"name": "Maria"}, entities={"payment": {"number": "P-1"}},
                            params=payload.params)
    try:
        out = compile_template(payload.text, html).render(
            context, limits=Limits(timeout=payload.limit))
    except TemplateError as exc:
        return "refused", exc.reason
    return "ok", out[:2000]


class _TrackingSettings:
    """The settings the tracker reads: tracking on, a link secret."""

    def __init__(self) -> None:
        from comms_pipeline.settings.links import LinkSettings
        from comms_pipeline.settings.web import WebSettings

        self.web = WebSettings(tracking="all", tracking_base_url="https://t.example.com")
        self.links = LinkSettings(secret="corpus-secret")
        self.var_dir = None


def main(names: list[str]) -> None:
    from comms_pipeline.rendering import validation, velocity  # noqa: F401

    velocity.PARSE_TIMEOUT = PARSE_TIMEOUT
    velocity.MAX_PARSE_TRIES = PARSE_TRIES
    limit = int((_vm_mb() + ADDRESS_SPACE_MB) * 1e6)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _alarm)
    for payload in PAYLOADS:
        if names and payload.name not in names:
            continue
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.monotonic()
        signal.alarm(PAYLOAD_SECONDS)
        try:
            outcome, message = _run_one(payload)
        except _OverTime:
            outcome, message = "OVERTIME", ""
        except MemoryError:
            outcome, message = "OUT_OF_MEMORY", ""
        except Exception as exc:
            outcome, message = "CRASH", f"{type(exc).__name__}: {exc}"[:500]
        finally:
            signal.alarm(0)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(json.dumps({"name": payload.name, "outcome": outcome, "message": message,
                          "seconds": round(time.monotonic() - started, 3),
                          "rss_growth_mb": round(grown / 1024, 1)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
