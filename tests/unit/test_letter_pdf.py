"""The pure parts of letter rendering: template HTML cleaning, page ranges, address lines."""

from __future__ import annotations

import pytest

from comms_pipeline.rendering.pdf import ANCHOR, address_lines, clean_fragment, page_ranges


@pytest.mark.parametrize("source, expected", [
    ("<div><p>a<b>b</div>", "<div><p>a<b>b</b></p></div>"),
    ("<table><tr><td>x</table>", "<table><tr><td>x</td></tr></table>"),
    ("</section></body></html><p>after</p>", "<p>after</p>"),
    ("<div/>text", "<div></div>text"),
    ("<p>1 &lt; 2 &amp; 3</p>", "<p>1 &lt; 2 &amp; 3</p>"),
    ("<br/><img src='logo.png' alt='Logo'>", '<br><img src="logo.png" alt="Logo">'),
])
def test_fragment_is_balanced_and_escaped(source: str, expected: str) -> None:
    assert clean_fragment(source) == expected


@pytest.mark.parametrize("source", [
    "<script>alert(1)</script>", "<style>section { display: none }</style>",
    "<title>t</title>", "<template><p>x</p></template>", "<iframe src='file:///etc/passwd'>",
    "<object data='x'></object>", "<textarea><p>x</p></textarea>",
    "<plaintext></section><section>", "<head><link rel=stylesheet href=x.css></head>",
    "<noscript>x</noscript>", "<select><option>x</select>",
])
def test_active_and_page_level_content_is_dropped(source: str) -> None:
    cleaned = clean_fragment(f"{source}<p>kept</p>" if "plaintext" not in source else source)
    for word in ("script", "style", "title", "template", "iframe", "object", "textarea",
                 "plaintext", "link", "section", "noscript", "select", "alert", "display"):
        assert word not in cleaned


def test_attributes_that_reach_other_pages_are_dropped() -> None:
    cleaned = clean_fragment(
        f'<p id="{ANCHOR}0" onclick="x()" style="position: fixed; top: 0">a</p>'
        '<p style="position:running(header)">b</p><p style="page: other">c</p>'
        '<p style="color: red" class="note" id="mine">d</p>'
        '<a name="cp-letter-1" href="https://example.com/?a=1&amp;b=&quot;2&quot;">e</a>')
    assert cleaned == ('<p>a</p><p>b</p><p>c</p><p style="color: red" class="note" id="mine">d</p>'
                       '<a href="https://example.com/?a=1&amp;b=&quot;2&quot;">e</a>')


def anchors(*pages: tuple[int, ...] | tuple[str, ...]) -> list[dict[str, object]]:
    return [{(f"{ANCHOR}{a}" if isinstance(a, int) else a): None for a in page}
            for page in pages]


def test_page_ranges_follow_the_letter_anchors() -> None:
    assert page_ranges(anchors((0,), (1,), (1, "mine"), (1,), (2,)), 3) == [[0], [1, 2, 3], [4]]


@pytest.mark.parametrize("pages, count", [
    (((0,), (0, 1), (1,)), 2),          # two letters on one page
    (((0,), (2,), (1,)), 3),            # out of order
    (((0,), (1,), (0,)), 2),            # a letter comes back after another
    (((0,), (1,)), 3),                  # a letter has no page
    (((), (0,)), 1),                    # a page before the first letter
    ((("cp-letter-x",),), 1),           # not one of ours
    (((5,),), 1),                       # out of range
])
def test_page_ranges_refuse_anything_ambiguous(pages, count) -> None:
    assert page_ranges(anchors(*pages), count) is None


def test_pages_without_an_anchor_continue_the_letter() -> None:
    assert page_ranges(anchors((0,), (), (1,)), 2) == [[0, 1], [2]]


@pytest.mark.parametrize("address, lines", [
    ("12 High St\nLondon\r\nEC1A 1AA", ["12 High St", "London", "EC1A 1AA"]),
    ("12 High St, London,  EC1A 1AA", ["12 High St", "London", "EC1A 1AA"]),
    ("  \n  ", []),
])
def test_address_lines(address: str, lines: list[str]) -> None:
    assert address_lines(address) == lines
