"""``$fmt``: the formatting helpers a template may call, in the contact's language.

These are the only callables a template can reach (see :mod:`.sandbox`). Each takes plain
data, returns a plain string and never raises anything but ``ValueError``/``TypeError`` on
bad input (reported as a template error). Numbers, amounts, dates and month names come from
the CLDR through Babel ("25,00 €", "1 Δεκεμβρίου 2026", "Νοεμβρίου 2026"): a language without a
territory is read as spoken in :data:`DEFAULT_TERRITORY` (the demo company's Cyprus: English
dates as "1 December 2026", not the US "December 1, 2026") and an unknown one as English.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, ClassVar

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_skeleton
from babel.numbers import format_currency, format_decimal, get_currency_precision

from comms_pipeline.rendering.sandbox import Helper, display, join_capped, rendering_html

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


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a number: {value!r}")
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None


def _as_date(value: Any) -> date:
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return datetime.fromisoformat(text) if "T" in text or " " in text \
                else date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not an ISO date: {value!r}") from None
    raise ValueError(f"not a date: {value!r}")


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
        places = int(decimals)
        if not 0 <= places <= 10:
            raise ValueError("decimals must be between 0 and 10")
        amount = _decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
        if not amount.is_finite() or amount.adjusted() > 30:
            raise ValueError(f"number out of range: {value!r}")
        pattern = "#,##0" + ("." + "0" * places if places else "")
        return _spaced(format_decimal(amount, format=pattern, locale=self.locale))

    def money(self, value: Any, currency: str | None = None) -> str:
        if _missing(value):
            return ""
        code = str(currency or self.currency).upper()
        if not (len(code) == 3 and code.isascii() and code.isalpha()):
            raise ValueError(f"not an ISO 4217 currency code: {currency!r}")
        places = get_currency_precision(code)
        amount = _decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
        if not amount.is_finite() or amount.adjusted() > 30:
            raise ValueError(f"amount out of range: {value!r}")
        return _spaced(format_currency(amount, code, locale=self.locale))

    def percent(self, value: Any, decimals: int = 0) -> str:
        if _missing(value):
            return ""
        places = int(decimals)
        if not 0 <= places <= 10:
            raise ValueError("decimals must be between 0 and 10")
        pattern = self.locale.percent_formats[None].pattern.split(";")[0]
        if places:
            pattern = _LAST_ZERO.sub("0." + "0" * places, pattern, count=1)
        amount = (_decimal(value) * 100).quantize(Decimal(1).scaleb(-places),
                                                   rounding=ROUND_HALF_UP)
        if not amount.is_finite() or amount.adjusted() > 30:
            raise ValueError(f"number out of range: {value!r}")
        return _spaced(_percent(amount, pattern, self.locale))

    def date(self, value: Any, style: str = "medium") -> str:
        if _missing(value):
            return ""
        day = _as_date(value)
        if style == "iso":
            return day.isoformat()[:10]
        if style == "long":
            return format_date(day, "long", locale=self.locale)
        skeleton = DATE_SKELETONS.get(style)
        if skeleton is None:
            raise ValueError("date style must be short, medium, long or iso")
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
            except ValueError:
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
        text, limit = display(value), int(length)
        return text if len(text) <= limit else text[:max(0, limit - 1)] + str(ellipsis)

    def default(self, value: Any, fallback: Any = "") -> str:
        text = display(value)
        return text if text else display(fallback)

    def yesno(self, value: Any) -> str:
        yes, no = YES_NO.get(self.language, YES_NO["en"])
        return yes if value else no

    def join(self, values: Any, separator: str = ", ") -> str:
        if not isinstance(values, list | tuple):
            return display(values)
        return join_capped(str(separator), (display(v) for v in values))


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
