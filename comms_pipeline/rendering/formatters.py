"""``$fmt``: the formatting helpers a template may call, in the contact's language.

These are the only callables a template can reach (see :mod:`.sandbox`). Each takes plain
data, returns a plain string and never raises anything but ``ValueError``/``TypeError`` on
bad input (reported as a template error). Locale data is kept small on purpose: the languages
the built-in templates are written in, with English as the fallback.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, ClassVar

from comms_pipeline.rendering.sandbox import Helper, display, join_capped


@dataclass(frozen=True)
class LocaleData:
    decimal: str
    group: str
    money: str  # "{sign}{symbol}{amount}" style pattern
    months: tuple[str, ...]
    months_short: tuple[str, ...]
    short_date: str  # strftime-like with {d} {m} {y}
    medium_date: str
    long_date: str
    true_false: tuple[str, str] = ("yes", "no")


_EN_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December")
_EL_MONTHS = ("Ιανουαρίου", "Φεβρουαρίου", "Μαρτίου", "Απριλίου", "Μαΐου", "Ιουνίου",
              "Ιουλίου", "Αυγούστου", "Σεπτεμβρίου", "Οκτωβρίου", "Νοεμβρίου", "Δεκεμβρίου")
_DE_MONTHS = ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August",
              "September", "Oktober", "November", "Dezember")
_FR_MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
              "septembre", "octobre", "novembre", "décembre")

LOCALES: dict[str, LocaleData] = {
    "en": LocaleData(".", ",", "{sign}{symbol}{amount}", _EN_MONTHS,
                     tuple(m[:3] for m in _EN_MONTHS), "{d:02d}/{m:02d}/{y}", "{d} {mon} {y}",
                     "{d} {month} {y}"),
    "el": LocaleData(",", ".", "{sign}{amount} {symbol}", _EL_MONTHS,
                     ("Ιαν", "Φεβ", "Μαρ", "Απρ", "Μαΐ", "Ιουν", "Ιουλ", "Αυγ", "Σεπ", "Οκτ",
                      "Νοε", "Δεκ"), "{d:02d}/{m:02d}/{y}", "{d} {mon} {y}", "{d} {month} {y}",
                     ("ναι", "όχι")),
    "de": LocaleData(",", ".", "{sign}{amount} {symbol}", _DE_MONTHS,
                     tuple(m[:3] for m in _DE_MONTHS), "{d:02d}.{m:02d}.{y}", "{d}. {mon} {y}",
                     "{d}. {month} {y}", ("ja", "nein")),
    "fr": LocaleData(",", "\u202f", "{sign}{amount} {symbol}", _FR_MONTHS,
                     tuple(m[:4] for m in _FR_MONTHS), "{d:02d}/{m:02d}/{y}", "{d} {mon} {y}",
                     "{d} {month} {y}", ("oui", "non")),
}

CURRENCY_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "CHF": "CHF", "JPY": "¥"}
MINOR_UNITS = {"JPY": 0}


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

    A missing value (None or blank) formats as an empty string.
    """

    template_methods: ClassVar[frozenset[str]] = frozenset({
        "money", "number", "percent", "date", "datetime", "upper", "lower", "capitalize",
        "truncate", "default", "yesno", "join",
    })

    def __init__(self, language: str | None = None, currency: str = "EUR") -> None:
        self.language = (language or "en").split("-")[0].split("_")[0].lower()
        self.locale = LOCALES.get(self.language, LOCALES["en"])
        self.currency = currency

    def number(self, value: Any, decimals: int = 2) -> str:
        if _missing(value):
            return ""
        places = int(decimals)
        if not 0 <= places <= 10:
            raise ValueError("decimals must be between 0 and 10")
        amount = _decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
        sign = "-" if amount < 0 else ""
        whole, _, fraction = f"{abs(amount):f}".partition(".")
        groups = []
        while len(whole) > 3:
            groups.insert(0, whole[-3:])
            whole = whole[:-3]
        groups.insert(0, whole)
        text = self.locale.group.join(groups)
        return sign + (text + self.locale.decimal + fraction if fraction else text)

    def money(self, value: Any, currency: str | None = None) -> str:
        if _missing(value):
            return ""
        code = str(currency or self.currency).upper()
        if not (len(code) == 3 and code.isascii() and code.isalpha()):
            raise ValueError(f"not an ISO 4217 currency code: {currency!r}")
        formatted = self.number(value, MINOR_UNITS.get(code, 2))
        sign = "-" if formatted.startswith("-") else ""
        return self.locale.money.format(sign=sign, symbol=CURRENCY_SYMBOLS.get(code, code),
                                        amount=formatted.lstrip("-"))

    def percent(self, value: Any, decimals: int = 0) -> str:
        if _missing(value):
            return ""
        return self.number(_decimal(value) * 100, decimals) + "%"

    def date(self, value: Any, style: str = "medium") -> str:
        if _missing(value):
            return ""
        day = _as_date(value)
        if style == "iso":
            return day.isoformat()[:10]
        pattern = {"short": self.locale.short_date, "medium": self.locale.medium_date,
                   "long": self.locale.long_date}.get(style)
        if pattern is None:
            raise ValueError("date style must be short, medium, long or iso")
        return pattern.format(d=day.day, m=day.month, y=day.year,
                              mon=self.locale.months_short[day.month - 1],
                              month=self.locale.months[day.month - 1])

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
        yes, no = self.locale.true_false
        return yes if value else no

    def join(self, values: Any, separator: str = ", ") -> str:
        if not isinstance(values, list | tuple):
            return display(values)
        return join_capped(str(separator), (display(v) for v in values))
