"""CSV cells a spreadsheet will not run: every CSV facemtl writes (``analyze --csv``,
``stream --csv``, ``db export --format csv``) passes its text cells through :func:`safe_cell`.

A text cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (a file or
source name is anyone's text) gets a leading ``'``, as OWASP advises against CSV injection;
JSON output keeps the text as it is. Numbers are never touched (a negative one is a number).
"""

from __future__ import annotations

from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """``value`` with a ``'`` before it when it is text a spreadsheet would take for a formula."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def safe_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with every text cell through :func:`safe_cell`."""
    return {k: safe_cell(v) for k, v in row.items()}
