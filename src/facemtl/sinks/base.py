"""The sink interface: where results go (a stream of JSON lines, a CSV file, annotated
images, a database). A new output is one class with ``write`` and ``close``.
"""

from __future__ import annotations

from typing import Sequence

from ..inference.results import ImageResult, TrackResult


class Sink:
    """Receives every :class:`ImageResult` in order, then ``close()`` once.

    ``write`` may raise ``OSError`` for one result it could not store; callers record that
    on the result's status and go on.
    """

    def write(self, result: ImageResult) -> None:
        raise NotImplementedError

    def write_track(self, track: TrackResult) -> None:
        """A video track that ended (or was open when the stream ended); ignored by default."""

    def close(self) -> None:
        pass

    @property
    def incomplete(self) -> bool:
        """Whether results written to it were lost without ``write`` or ``close`` raising (the
        database's: dropped past its backlog, or refused); a command's exit status counts them."""
        return False

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MultiSink(Sink):
    """Several sinks fed the same results."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)

    def write(self, result: ImageResult) -> None:
        for s in self.sinks:
            s.write(result)

    def write_track(self, track: TrackResult) -> None:
        for s in self.sinks:
            s.write_track(track)

    def close(self) -> None:
        for s in self.sinks:
            s.close()
