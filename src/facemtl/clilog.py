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


def _printed_elsewhere() -> bool:
    """Whether a program that runs facemtl's command line from Python configured logging to print
    on standard error or output itself (``logging.basicConfig``): its handler prints our records
    already (a review: every line came twice). A test's capture handler does not count."""
    streams = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    return any(isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in streams
               for h in logging.getLogger().handlers)


@contextlib.contextmanager
def log_to_stderr(level: str | None = None) -> Iterator[None]:
    """While the block runs, print facemtl's log records on stderr: of ``level`` or above where
    it is given (``serve --log-level``), else of the level the ``facemtl`` logger has, WARNING
    where none was set.

    Nested (``serve`` sets its ``--log-level`` inside the command's own block), the inner
    block sets the level and adds no second handler, so no line is printed twice."""
    logger = logging.getLogger("facemtl")
    before = logger.level
    ours = [h for h in logger.handlers if isinstance(h.formatter, _Formatter)]
    handler = None
    if not ours and not _printed_elsewhere():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Formatter("%(message)s"))
        logger.addHandler(handler)
    if level is not None:
        logger.setLevel(level.upper())
    elif logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        if handler is not None:
            logger.removeHandler(handler)
        logger.setLevel(before)
