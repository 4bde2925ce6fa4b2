"""The sink interface: where results go (a stream of JSON lines, a CSV file, annotated
images, a database). A new output is one class with ``write`` and ``close``; registered in
:data:`SINKS` under a name, the command line's ``--output NAME:TARGET`` (``analyze``,
``stream``) builds it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..inference.results import ImageResult, TrackResult
from ..registry import Registry


class Sink:
    """Receives every :class:`ImageResult` in order, then ``close()`` once.

    ``write`` raises ``OSError`` when it cannot store a result (a full disk, a server away):
    ``analyze`` and ``stream`` then say so once and leave that sink out, the other outputs go
    on, and the exit status is 1. (``analyze``'s annotated copies are the exception: a copy
    not written marks its image's record, and the copies go on.)
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


#: Outputs by name, for ``--output NAME:TARGET``: ``@SINKS.register("name")`` on
#: ``factory(target: str, tasks: list[Task]) -> Sink`` (``target``: what follows the colon, e.g. a
#: file or a URL, ``""`` when none; ``tasks``: the model's, for column headers). A plugin's sink
#: is found as its other registrations are (``FACEMTL_PLUGINS``; README, "Extending").
SINKS: Registry[Sink] = Registry("sink")


class NamedSink(Sink):
    """A sink asked for by name (:func:`build_output`), perhaps a plugin's: any failure of its own is
    an ``OSError`` saying ``cannot write output SPEC: ...``, which the commands report once before
    leaving it out (the other outputs go on, the exit status is 1), not a traceback that ends the
    run with the results of the others (a user test)."""

    def __init__(self, spec: str, sink: Any) -> None:
        self.spec, self.sink = spec, sink
        self.path = f"output {spec}"  # (how the commands' error sentences name it)

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write output {self.spec}: "
                                     f"{exc.strerror or exc or type(exc).__name__}") from exc
        except NotImplementedError as exc:
            why = str(exc) or f"{type(self.sink).__qualname__} does not implement {fn.__name__}()"
            raise OSError(f"cannot write output {self.spec}: {why}") from exc
        except Exception as exc:  # a plugin's mistake: named, and the other outputs go on
            raise OSError(f"cannot write output {self.spec}: {type(exc).__name__}: {exc}") from exc

    def write(self, result: ImageResult) -> None:
        self._call(self.sink.write, result)

    def write_track(self, track: TrackResult) -> None:
        self._call(self.sink.write_track, track)

    def close(self) -> None:
        self._call(self.sink.close)

    @property
    def incomplete(self) -> bool:
        return bool(getattr(self.sink, "incomplete", False))

    def __getattr__(self, name: str) -> Any:  # the sink's own (a database sink's heartbeat, ...)
        if name == "sink":  # (not set yet: an object being copied)
            raise AttributeError(name)
        return getattr(self.sink, name)


def passed_sinks(sinks: Sequence[Any]) -> list[NamedSink]:
    """Sinks passed from Python (``analyze(sinks=...)``, ``run_stream(sinks=...)``), each checked to
    have ``write`` and ``close`` (``ValueError`` naming it: a string said "'str' object has no
    attribute 'write'" mid-run) and named by its class (:class:`NamedSink`)."""
    out = []
    for s in sinks:
        if isinstance(s, NamedSink):
            out.append(s)
            continue
        if not callable(getattr(s, "write", None)) or not callable(getattr(s, "close", None)):
            raise ValueError(f"a sink passed in is an object of type {type(s).__qualname__}, which has no "
                             "write(result) and close() (a facemtl.sinks.Sink)")
        if not callable(getattr(s, "write_track", None)):
            s.write_track = lambda track: None
        out.append(NamedSink(type(s).__name__, s))
    return out


def output_name(spec: str) -> str:
    """The sink name of ``--output NAME:TARGET``, checked registered (``UnknownName`` if not; the
    commands ask before their model loads) or a ``ValueError`` for a spec that names none."""
    name = spec.partition(":")[0].strip()
    if not name:
        raise ValueError(f"--output takes NAME:TARGET (a registered sink and, e.g., a file), not {spec!r}")
    SINKS.get(name)
    return name


def build_output(spec: str, tasks: Sequence[Any]) -> NamedSink:
    """The sink ``--output NAME:TARGET`` asks for, built by :data:`SINKS`'s ``NAME`` with
    ``TARGET``. ``UnknownName`` (a ``KeyError``) for a name no registration gives; ``ValueError``
    in one sentence for a form that is not ``NAME[:TARGET]``, a target the sink refuses, or a
    factory whose answer has no ``write``; the machine's refusal (``OSError``) as it is."""
    name, _, target = spec.partition(":")
    factory = SINKS.get(output_name(spec))
    try:
        sink = factory(target, list(tasks))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--output {spec}: {exc}") from None
    if not callable(getattr(sink, "write", None)) or not callable(getattr(sink, "close", None)):
        raise ValueError(f"--output {spec}: the sink {name!r} was built as an object of type "
                         f"{type(sink).__qualname__}, which has no write(result) and close() (a facemtl.sinks.Sink)")
    if not callable(getattr(sink, "write_track", None)):
        sink.write_track = lambda track: None  # (a plain object with write and close: tracks ignored, as Sink's)
    return NamedSink(spec, sink)


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
