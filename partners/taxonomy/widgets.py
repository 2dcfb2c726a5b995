"""How a taxonomy cell reads into a model value, and how a value is written back (the Widget of
django-import-export: ``read`` is its ``clean``, ``write`` its ``render``). Pure: no Django.

A cell that cannot be read raises :class:`CellError`; its message is shown to staff as it is,
after the cell (``Traits!F4: 'soon' is not a whole number``). An empty cell reads as ``None``
(``""`` for text): the column's default, or ``'…' is required``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any


class CellError(ValueError):
    """A cell value that cannot be read; the message is shown to staff as it is."""


def _same(value: Any) -> object:
    return value


@dataclass(frozen=True)
class Widget:
    read: Callable[[object], Any]
    write: Callable[[Any], object] = _same  # never given None: an empty value is an empty cell


def text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _verbatim(value: object) -> str:
    """Text kept as typed (a template's leading or trailing space is part of it)."""
    return value if isinstance(value, str) else text(value)


def _whole_number(value: object) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise CellError(f"'{value}' is not a whole number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise CellError(f"'{value}' is not a whole number")
    if number < 0:
        raise CellError(f"'{value}' must not be negative")
    return number


def _positive_id(value: object) -> int | None:
    number = _whole_number(value)
    if number == 0:
        raise CellError("an ID must be a positive whole number")
    return number


def _positive_number(value: object) -> int | None:
    number = _whole_number(value)
    if number == 0:
        raise CellError("must be a positive whole number")
    return number


_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"0", "false", "no", "n"}


def _boolean(value: object) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    lowered = text(value).lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise CellError(f"'{value}' is not TRUE or FALSE")


def _time_of_day(value: object) -> time | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.time()
    if isinstance(value, time):
        return value
    if isinstance(value, float) and 0 <= value < 1:  # a spreadsheet time: a share of a day
        return (datetime.min + timedelta(days=value)).time().replace(microsecond=0)
    typed = text(value)
    try:
        return time.fromisoformat(typed)
    except ValueError:
        raise CellError(f"'{typed}' is not a time of day (HH:MM)") from None


def _date(value: object) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    typed = text(value)
    try:
        return date.fromisoformat(typed)
    except ValueError:
        raise CellError(f"'{typed}' is not a date (YYYY-MM-DD)") from None


def _host_list(value: object) -> list[str]:
    return [host.strip() for host in text(value).split(",") if host.strip()]


def choice(values: Iterable[str]) -> Widget:
    """One of ``values`` (a TextChoices' ``.values``; the empty choice is the empty cell),
    in any case."""
    allowed = [str(value) for value in values if value]

    def read(value: object) -> str | None:
        typed = text(value)
        if not typed:
            return None
        if typed.lower() not in allowed:
            raise CellError(f"'{typed}' is not one of {', '.join(allowed)}")
        return typed.lower()

    return Widget(read)


TEXT = Widget(text)
VERBATIM = Widget(_verbatim)
WHOLE_NUMBER = Widget(_whole_number)
ID = Widget(_positive_id)
POSITIVE_NUMBER = Widget(_positive_number)
BOOLEAN = Widget(_boolean)
TIME_OF_DAY = Widget(_time_of_day, lambda value: value.strftime("%H:%M"))
DATE = Widget(_date, date.isoformat)
HOST_LIST = Widget(_host_list, ",".join)
