"""facemtl's own log (``logging.getLogger("facemtl")``) on standard error while a command runs,
written as the command line's other lines are: ``facemtl: warning: ...``.

Without a handler Python prints a warning's bare message (a user test: "the results database
refused 3 of 40 images ..." came without the ``facemtl: warning:`` the other lines carry) and
drops INFO records (a retention purge deleted faces without a word).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"facemtl: {record.levelname.lower()}: {super().format(record)}"


@contextlib.contextmanager
def log_to_stderr(level: str = "warning") -> Iterator[None]:
    """While the block runs, print facemtl's log records of ``level`` or above on stderr.

    Nested (``serve`` sets its ``--log-level`` inside the command's own block), the inner
    block sets the level and adds no second handler, so no line is printed twice."""
    logger = logging.getLogger("facemtl")
    before = logger.level
    ours = [h for h in logger.handlers if isinstance(h.formatter, _Formatter)]
    handler = None
    if not ours:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())
    try:
        yield
    finally:
        if handler is not None:
            logger.removeHandler(handler)
        logger.setLevel(before)
