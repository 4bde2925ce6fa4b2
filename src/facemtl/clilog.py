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


def _printed_elsewhere(logger: logging.Logger) -> bool:
    """Whether a program that runs facemtl's command line from Python has a handler print our
    warnings on standard error or output already (``logging.basicConfig``, or a handler of its
    own on the ``facemtl`` logger): ours would print each line twice (a review). Handlers along
    the logger's chain count, as propagation reaches them; a test's capture handler does not,
    nor one set to print errors only."""
    streams = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    node: logging.Logger | None = logger
    while node is not None:
        for h in node.handlers:
            if (isinstance(h, logging.StreamHandler) and not isinstance(h.formatter, _Formatter)
                    and getattr(h, "stream", None) in streams and h.level <= logging.WARNING):
                return True
        node = node.parent if node.propagate else None
    return False


@contextlib.contextmanager
def log_to_stderr(level: str | None = None) -> Iterator[None]:
    """While the block runs, print facemtl's log records on stderr: of ``level`` or above where
    it is given (``serve --log-level``), else of the level the ``facemtl`` logger has, WARNING
    where none was set. Where the program's own handler prints them already, no handler is
    added and, unless ``level`` is given, no level is set.

    Nested (``serve`` sets its ``--log-level`` inside the command's own block), the inner
    block sets the level and adds no second handler, so no line is printed twice."""
    logger = logging.getLogger("facemtl")
    before = logger.level
    ours = [h for h in logger.handlers if isinstance(h.formatter, _Formatter)]
    handler = None
    if not ours and not _printed_elsewhere(logger):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Formatter("%(message)s"))
        logger.addHandler(handler)
    if level is not None:
        logger.setLevel(level.upper())
    elif (handler is not None or ours) and logger.level == logging.NOTSET:  # (another's printing: its levels)
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        if handler is not None:
            logger.removeHandler(handler)
        logger.setLevel(before)
