"""CSV for spreadsheets. An export holds text from outside: what a callee said (its transcript, and what
the analysis extracted from it), metadata, a contact's columns. A cell starting with `=`, `+`, `-`, `@`
would run as a formula in Excel or Sheets (OWASP's "CSV injection"), so it is kept as text with a
leading `'`; numbers and phone numbers (`+33612345678`, `-5`) are left as they are."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Digits with signs, spaces, dots and brackets: arithmetic at most, never a function or a link.
_NUMBER = re.compile(r"[-+\d\s().]*\d[-+\d\s().]*")


def cell(value: object) -> object:
    """The value as a spreadsheet shows it, never runs it."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def as_text(value: object) -> str:
    """An extracted field as a cell's text: JSON for anything but a string (the formula guard is
    `cell`'s, applied to every cell)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def csv_text(rows: Iterable[Sequence[object]]) -> str:
    """The rows (the header first) as CSV text, each cell made safe."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerows([cell(value) for value in row] for row in rows)
    return buffer.getvalue()
