"""``$fmt``: the formatting helpers a template may call, in the contact's language.

These are the only callables a template can reach (see :mod:`.sandbox`). Each takes plain
data, returns a plain string and refuses bad input with a :class:`SandboxError` in the
product's words (reported as a template error); a value is quoted in a message only as the
text it displays as, so no object's Python representation can reach the author. Numbers,
amounts, dates and month names come from the CLDR through Babel ("25,00 €",
"1 Δεκεμβρίου 2026", "Νοεμβρίου 2026"): a language without a territory is read as spoken in
:data:`DEFAULT_TERRITORY` (the demo company's Cyprus: English dates as "1 December 2026",
not the US "December 1, 2026") and an unknown one as English.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, ClassVar

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_skeleton
from babel.numbers import format_currency, format_decimal, get_currency_precision

from comms_pipeline.rendering.sandbox import (
    Helper,
    SandboxError,
    display,
    join_capped,
    kind,
    rendering_html,
)

#: The territory a bare language is read in (``el`` -> ``el_CY``) when the CLDR has it.
DEFAULT_TERRITORY = "CY"
FALLBACK_LOCALE = "en"
#: Babel's date skeletons: numeric and abbreviated dates with the year in full.
DATE_SKELETONS = {"short": "yMMdd", "medium": "yMMMd"}
#: ``$fmt.yesno``: words, not locale data the CLDR carries.
YES_NO = {"en": ("yes", "no"), "el": ("ναι", "όχι"), "de": ("ja", "nein"), "fr": ("oui", "non")}
_LAST_ZERO = re.compile(r"0(?=[^0]*$)")


@lru_cache(maxsize=64)
def locale_for(language: str) -> Locale:
    """The Babel locale of a language code (``el``, ``el-CY``, ``en_GB``), cached."""
    tag = language.replace("-", "_")
    candidates = [tag] if "_" in tag else [f"{tag}_{DEFAULT_TERRITORY}", tag]
    for candidate in [*candidates, f"{FALLBACK_LOCALE}_{DEFAULT_TERRITORY}", FALLBACK_LOCALE]:
        try:
            return Locale.parse(candidate)
        except (UnknownLocaleError, ValueError):
            continue
    return Locale.parse(FALLBACK_LOCALE)  # pragma: no cover - English is always there


def _missing(value: Any) -> bool:
    """A missing value formats as nothing, as a missing tag does."""
    return value is None or (isinstance(value, str) and not value.strip())


def shown(value: Any) -> str:
    """A value quoted in a message: the text it displays as (short), or what it is."""
    if isinstance(value, str | int | float | Decimal | date) and not isinstance(value, bool):
        text = display(value)
        return repr(text if len(text) <= 40 else text[:39] + "…")
    return kind(value)


def _decimal(value: Any) -> Decimal:
    """A finite number of sensible size (no NaN, no Infinity, no 1e999999) from plain data."""
    kind_ = type(value)
    if kind_ is Decimal:
        number = value
    elif kind_ is int:
        number = Decimal(value)
    elif kind_ is str or kind_ is float or isinstance(value, str):
        text = str(value).strip()
        try:
            if len(text) > 100:
                raise ValueError(text)
            number = Decimal(text)
        except (InvalidOperation, ValueError):
            raise SandboxError(f"not a number: {shown(value)}") from None
    else:
        raise SandboxError(f"not a number: {shown(value)}")
    if not number.is_finite() or not -60 <= number.adjusted() <= 60:
        raise SandboxError(f"not a usable number: {shown(value)}")
    return number


def _whole(value: Any, what: str, low: int, high: int) -> int:
    """A whole-number argument (``decimals``, ``length``) within ``low``..``high``."""
    if type(value) is int and low <= value <= high:
        return value
    text_number = isinstance(value, str) and value.strip().lstrip("-").isdigit() \
        and len(value) < 12
    if isinstance(value, Decimal):
        whole_number = value.is_finite() and abs(value) < 10 ** 12 and value == int(value)
    else:
        whole_number = isinstance(value, float) and math.isfinite(value) \
            and abs(value) < 10 ** 12 and value == int(value)
    if text_number or whole_number:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SandboxError(f"{what} must be a whole number between {low} and {high}")
    return value


def _as_date(value: Any) -> date:
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return datetime.fromisoformat(text) if "T" in text or " " in text \
                else date.fromisoformat(text)
        except ValueError:
            raise SandboxError(f"not an ISO date: {shown(value)}") from None
    raise SandboxError(f"not a date: {shown(value)}")


class Formatters(Helper):
    """Formatting in one language: ``$fmt.money($payment.amount, 'EUR')``, ``$fmt.date(...)``.

    A missing value (None or blank) formats as an empty string (and is missing data when it
    is a referring entity's: see :mod:`comms_pipeline.rendering`).
    """

    template_methods: ClassVar[frozenset[str]] = frozenset({
        "money", "number", "percent", "date", "datetime", "month", "upper", "lower",
        "capitalize", "truncate", "default", "yesno", "join",
    })

    def __init__(self, language: str | None = None, currency: str = "EUR") -> None:
        self.language = (language or "en").split("-")[0].split("_")[0].lower()
        self.locale = locale_for(language or "en")
        self.currency = currency

    def number(self, value: Any, decimals: int = 2) -> str:
        if _missing(value):
            return ""
        places = _whole(decimals, "decimals", 0, 10)
        amount = _decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
        if not amount.is_finite() or amount.adjusted() > 30:
            raise SandboxError(f"number out of range: {shown(value)}")
        pattern = "#,##0" + ("." + "0" * places if places else "")
        return _spaced(format_decimal(amount, format=pattern, locale=self.locale))

    def money(self, value: Any, currency: str | None = None) -> str:
        if _missing(value):
            return ""
        code = self.currency if currency is None or currency == "" else currency
        if not (isinstance(code, str) and len(code) == 3 and code.isascii() and code.isalpha()):
            raise SandboxError(f"not an ISO 4217 currency code: {shown(currency)}")
        code = code.upper()
        places = get_currency_precision(code)
        amount = _decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
        if not amount.is_finite() or amount.adjusted() > 30:
            raise SandboxError(f"amount out of range: {shown(value)}")
        return _spaced(format_currency(amount, code, locale=self.locale))

    def percent(self, value: Any, decimals: int = 0) -> str:
        if _missing(value):
            return ""
        places = _whole(decimals, "decimals", 0, 10)
        pattern = self.locale.percent_formats[None].pattern.split(";")[0]
        if places:
            pattern = _LAST_ZERO.sub("0." + "0" * places, pattern, count=1)
        amount = (_decimal(value) * 100).quantize(Decimal(1).scaleb(-places),
                                                   rounding=ROUND_HALF_UP)
        if not amount.is_finite() or amount.adjusted() > 30:
            raise SandboxError(f"number out of range: {shown(value)}")
        return _spaced(_percent(amount, pattern, self.locale))

    def date(self, value: Any, style: str = "medium") -> str:
        if _missing(value):
            return ""
        day = _as_date(value)
        if style == "iso":
            return day.isoformat()[:10]
        if style == "long":
            return format_date(day, "long", locale=self.locale)
        skeleton = DATE_SKELETONS.get(style) if isinstance(style, str) else None
        if skeleton is None:
            raise SandboxError("date style must be short, medium, long or iso")
        return format_skeleton(skeleton, day, locale=self.locale)

    def month(self, value: Any) -> str:
        """The month and year (``Νοεμβρίου 2026``) of a date or of ``2026-11``; any other
        text (a period already written out) is shown as it is."""
        if _missing(value):
            return ""
        if isinstance(value, str):
            text = value.strip()
            if re.fullmatch(r"\d{4}-\d{2}", text):
                text += "-01"
            try:
                day = _as_date(text)
            except SandboxError:  # a period already written out
                return text
        else:
            day = _as_date(value)
        return format_date(day, "MMMM y", locale=self.locale)

    def datetime(self, value: Any, style: str = "medium") -> str:
        if _missing(value):
            return ""
        moment = _as_date(value)
        text = self.date(moment, style)
        if isinstance(moment, datetime):
            text += f" {moment.hour:02d}:{moment.minute:02d}"
        return text

    def upper(self, value: Any) -> str:
        return display(value).upper()

    def lower(self, value: Any) -> str:
        return display(value).lower()

    def capitalize(self, value: Any) -> str:
        text = display(value)
        return text[:1].upper() + text[1:]

    def truncate(self, value: Any, length: int = 50, ellipsis: str = "…") -> str:
        text, limit = display(value), _whole(length, "length", 0, 1_000_000)
        return text if len(text) <= limit else text[:max(0, limit - 1)] + display(ellipsis)

    def default(self, value: Any, fallback: Any = "") -> str:
        text = display(value)
        return text if text else display(fallback)

    def yesno(self, value: Any) -> str:
        yes, no = YES_NO.get(self.language, YES_NO["en"])
        return yes if value else no

    def join(self, values: Any, separator: str = ", ") -> str:
        if not isinstance(values, list | tuple):
            return display(values)
        return join_capped(display(separator), (display(v) for v in values))


_NO_BREAK = str.maketrans({"\xa0": " ", "\u202f": " "})


def _spaced(text: str) -> str:
    """The CLDR's no-break spaces ("25,00\xa0€") kept in HTML, where they keep an amount on
    one line, and plain spaces elsewhere: an SMS with a no-break space leaves GSM-7."""
    return text if rendering_html() else text.translate(_NO_BREAK)


def _percent(amount: Decimal, pattern: str, locale: Locale) -> str:
    """``amount`` (already times 100) in the locale's percent pattern (``#,##0.0 %``): the
    number part formatted by Babel, the sign and its spacing kept where the locale puts them."""
    number = re.search(r"[#,0.]+", pattern)
    if number is None:  # pragma: no cover - every CLDR percent pattern has a number part
        return format_decimal(amount, locale=locale) + "%"
    text = format_decimal(amount, format=number.group(0), locale=locale)
    return pattern[:number.start()] + text + pattern[number.end():]
