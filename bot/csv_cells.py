"""Parsing of single CSV cells: dates, timestamps, amounts, flags, statuses, domains, zones.

Exports from Salesforce, HubSpot and spreadsheets write these in many ways; each parser accepts
the common ones and raises `CellError` with what to write instead.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation

def header_key(name: str) -> str:
    """Header names match regardless of case, spaces, underscores and punctuation."""
    return re.sub(r"[^0-9a-z]", "", name.casefold())


class CellError(ValueError):
    pass


DATE_HELP = "use YYYY-MM-DD, M/D/YYYY or D.M.YYYY"
_TIME = r"(?:[T ]\s*(\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?\s*([AaPp][Mm])?\s*(Z|UTC|GMT|[+-]\d{2}:?\d{2})?)?"
_DATE_FORMATS = (  # (regex, order of year/month/day groups)
    (re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})" + _TIME), "ymd"),
    (re.compile(r"(\d{4})/(\d{1,2})/(\d{1,2})" + _TIME), "ymd"),
    (re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})" + _TIME), "mdy"),
    (re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})" + _TIME), "dmy"),
)


def _date_and_time(text: str) -> tuple[date, tuple[str | None, ...]]:
    for pattern, order in _DATE_FORMATS:
        m = pattern.fullmatch(text.strip())
        if m is None:
            continue
        parts = dict(zip(order, m.groups()[:3]))
        try:
            day = date(int(parts["y"]), int(parts["m"]), int(parts["d"]))
        except ValueError:
            raise CellError(f"not a real date: {text!r} ({DATE_HELP})") from None
        return day, m.groups()[3:]
    raise CellError(f"not a date: {text!r} ({DATE_HELP})")


def parse_date(text: str) -> date:
    """YYYY-MM-DD (also YYYY/MM/DD), M/D/YYYY (US) or D.M.YYYY; a trailing time of day is ignored."""
    return _date_and_time(text)[0]


def parse_datetime(text: str) -> datetime:
    """ISO 8601, or one of the date formats with an optional time (24 h or AM/PM) and offset; UTC if none."""
    try:
        return datetime.fromisoformat(text.strip().replace(" UTC", "+00:00"))
    except ValueError:
        pass
    day, (hour, minute, second, ampm, zone) = _date_and_time(text)
    h, mi, se = int(hour or 0), int(minute or 0), int(second or 0)
    if ampm:
        if not 1 <= h <= 12:
            raise CellError(f"not a time of day: {text!r}")
        h = h % 12 + (12 if ampm.lower() == "pm" else 0)
    tz = timezone.utc
    if zone and zone.upper() not in ("Z", "UTC", "GMT"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    try:
        return datetime.combine(day, time(h, mi, se), tz)
    except ValueError:
        raise CellError(f"not a time of day: {text!r}") from None


_SYMBOLS = {"US$": "USD", "C$": "CAD", "CA$": "CAD", "A$": "AUD", "AU$": "AUD", "NZ$": "NZD", "HK$": "HKD",
            "R$": "BRL", "$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "₹": "INR", "₩": "KRW", "₪": "ILS",
            "zł": "PLN", "Fr.": "CHF", "kr": None}
_SYMBOL_RE = re.compile("|".join(re.escape(s) for s in sorted(_SYMBOLS, key=len, reverse=True)))
_CODE_RE = re.compile(r"^([A-Z]{3})\s*|\s*([A-Z]{3})$")  # "USD 1,000", "1.000 EUR"
_GROUPED = {",": re.compile(r"\d{1,3}(,\d{3})+"), ".": re.compile(r"\d{1,3}(\.\d{3})+")}
AMOUNT_HELP = "write a number such as 1250000.00 or $1,250,000.00"


def parse_amount(text: str) -> tuple[Decimal, str | None]:
    """An amount and the currency its symbol or code implies (None when it names none).

    Thousands separators: ',', '.', spaces and apostrophes. With both ',' and '.', the last one is
    the decimal mark; a lone ',' followed by one or two digits is a decimal comma; a lone '.' is a
    decimal point. Parentheses or a minus sign make it negative.
    """
    s = text.strip()
    currency: str | None = None
    code = _CODE_RE.search(s)
    if code and not s.replace(code.group(0), "").strip().isalpha():
        currency = (code.group(1) or code.group(2)).upper()
        s = s.replace(code.group(0), "", 1)
    symbol = _SYMBOL_RE.search(s)
    if symbol:
        currency = currency or _SYMBOLS[symbol.group(0)]
        s = s.replace(symbol.group(0), "", 1)
    negative = False
    s = s.strip()
    if s.startswith("(") and s.endswith(")"):
        negative, s = True, s[1:-1].strip()
    if s.startswith("-"):
        negative, s = not negative, s[1:].strip()
    s = re.sub(r"[\s\u00a0\u202f'’]", "", s)
    if not re.fullmatch(r"[\d.,]*\d[\d.,]*", s):
        raise CellError(f"not an amount: {text!r} ({AMOUNT_HELP})")
    if "," in s and "." in s:
        mark = "," if s.rfind(",") > s.rfind(".") else "."
        group = "." if mark == "," else ","
        whole, _, cents = s.rpartition(mark)
        if not (_GROUPED[group].fullmatch(whole) or whole.isdigit()) or not cents.isdigit():
            raise CellError(f"not an amount: {text!r} ({AMOUNT_HELP})")
        s = whole.replace(group, "") + "." + cents
    elif "," in s:
        if re.fullmatch(r"\d+,\d{1,2}", s):
            s = s.replace(",", ".")
        elif _GROUPED[","].fullmatch(s):
            s = s.replace(",", "")
        else:
            raise CellError(f"not an amount: {text!r} ({AMOUNT_HELP})")
    elif s.count(".") > 1:
        if not _GROUPED["."].fullmatch(s):
            raise CellError(f"not an amount: {text!r} ({AMOUNT_HELP})")
        s = s.replace(".", "")
    try:
        value = Decimal(s)
    except InvalidOperation:
        raise CellError(f"not an amount: {text!r} ({AMOUNT_HELP})") from None
    return (-value if negative else value), currency


_TRUE = {"true", "yes", "y", "1", "x", "t", "wahr", "ja"}
_FALSE = {"false", "no", "n", "0", "f", "falsch", "nein"}


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise CellError(f"not true or false: {text!r}")


STATUSES = {"open": "open", "won": "won", "closedwon": "won", "lost": "lost", "closedlost": "lost"}


def parse_status(text: str) -> str:
    status = STATUSES.get(header_key(text))
    if status is None:
        raise CellError(f"unknown status {text!r}: use open, won or lost")
    return status


def parse_probability(text: str) -> int:
    s = text.strip().replace(",", ".")
    percent = s.endswith("%")
    try:
        value = Decimal(s.rstrip("%").strip())
    except InvalidOperation:
        raise CellError(f"not a probability: {text!r} (0 to 100)") from None
    if not percent and "." in s and 0 <= value <= 1:
        value *= 100  # HubSpot writes 0.6 for 60 %
    if not 0 <= value <= 100:
        raise CellError(f"probability out of range: {text!r} (0 to 100)")
    return int(value.to_integral_value())


def parse_domain(text: str) -> str:
    host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text.strip().lower())
    host = re.split(r"[/?#]", host, maxsplit=1)[0].split("@")[-1].rsplit(":", 1)[0] if host else host
    return host.removeprefix("www.") or text.strip().lower()


def parse_time_zone(text: str) -> str:
    m = re.search(r"\(([A-Za-z_]+(?:/[A-Za-z0-9_+-]+)+)\)\s*$", text)  # Salesforce: "(GMT+01:00) … (Europe/Berlin)"
    return m.group(1) if m else text.strip()
