"""The sink interface: where results go (a stream of JSON lines, a CSV file, annotated
images, a database). A new output is one class with ``write`` and ``close``; registered in
:data:`SINKS` under a name, the command line's ``--output NAME:TARGET`` (``analyze``,
``stream``) builds it.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..inference.results import ImageResult, TrackResult
from ..registry import Registry


class Sink:
    """Receives every :class:`ImageResult` in order, then ``close()`` once.

    ``write`` raises ``OSError`` when it cannot store a result (a full disk, a server away).
    ``stream`` then says so once and leaves that sink out, the other outputs go on, and the
    exit status is 1; so does ``analyze`` for the outputs of ``--output`` and those passed in,
    while its standard output and ``--db`` stop the run, and an annotated copy not written
    marks its image's record (the copies go on).
    """

    def write(self, result: ImageResult) -> None:
        raise NotImplementedError

    def write_track(self, track: TrackResult) -> None:
        """A video track that ended (or was open when the stream ended); ignored by default."""

    def close(self) -> None:
        pass

    def abandon(self) -> None:
        """The run ends before its first result (another output was refused): by default
        ``close()``; a sink that would replace a file may leave it as it was instead."""
        self.close()

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

    def _call(self, method: str, *args: Any) -> None:
        fn = getattr(self.sink, method, None)
        if fn is None and method == "write_track":  # (an object with write and close only: tracks ignored)
            return
        try:
            fn(*args)
        except Exception as exc:  # a plugin's mistake too: named, and the other outputs go on
            raise OSError(self._said(exc, method)) from exc

    def _said(self, exc: Exception, method: str) -> str:
        """``cannot write output 'SPEC': why`` (no errno: the commands print it as it is)."""
        if isinstance(exc, OSError):
            why = exc.strerror or str(exc) or type(exc).__name__
        elif isinstance(exc, NotImplementedError):
            why = str(exc) or f"{type(self.sink).__qualname__} does not implement {method}()"
        elif type(exc) is RuntimeError and str(exc):  # its own sentence (a database's "did not take the last batch")
            why = str(exc)
        else:
            why = f"{type(exc).__name__}: {exc}"
        return f"cannot write output {self.spec!r}: {why}"

    def write(self, result: ImageResult) -> None:
        self._call("write", result)

    def write_track(self, track: TrackResult) -> None:
        self._call("write_track", track)

    def close(self) -> None:
        self._call("close")

    def abandon(self) -> None:
        self._call("abandon" if callable(getattr(self.sink, "abandon", None)) else "close")

    @property
    def incomplete(self) -> bool:
        return bool(getattr(self.sink, "incomplete", False))

    def __getattr__(self, name: str) -> Any:  # the sink's own (a database sink's heartbeat, ...)
        if name == "sink":  # (not set yet: an object being copied)
            raise AttributeError(name)
        return getattr(self.sink, name)


def _lacks_sink_methods(sink: Any) -> str | None:
    """``which has no write(result) and close() ...`` where ``sink`` lacks either, else ``None``."""
    if callable(getattr(sink, "write", None)) and callable(getattr(sink, "close", None)):
        return None
    return f"an object of type {type(sink).__qualname__}, which has no write(result) and close() (a facemtl.sinks.Sink)"


def passed_sinks(sinks: Sequence[Any]) -> list[NamedSink]:
    """Sinks passed from Python (``analyze(sinks=...)``, ``run_stream(sinks=...)``), each checked to
    have ``write`` and ``close`` (``ValueError`` naming it: a string said "'str' object has no
    attribute 'write'" mid-run) and named by its class (:class:`NamedSink`)."""
    out = []
    for s in sinks:
        if isinstance(s, NamedSink):
            out.append(s)
            continue
        if lacks := _lacks_sink_methods(s):
            raise ValueError(f"a sink passed in is {lacks}")
        out.append(NamedSink(type(s).__name__, s))
    return out


def output_name(spec: str) -> str:
    """The sink name of ``--output NAME:TARGET``, checked registered (``UnknownName`` if not) or a
    ``ValueError`` for a spec that names none."""
    name = spec.partition(":")[0].strip()
    if not name:
        raise ValueError(f"--output takes NAME:TARGET (a registered sink and, e.g., a file), not {spec!r}")
    if ":" not in spec and ("." in name or "/" in name) and SINKS.find(name) is None:  # a file alone (a user
        suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""                # test: "did you mean 'jsonl'?")
        hint = f" (did you mean --output {suffix}:{name}?)" if suffix and SINKS.find(suffix) is not None else ""
        raise ValueError(f"--output takes NAME:TARGET, a sink's name before the file, not a file alone{hint}")
    SINKS.get(name)
    return name


def check_outputs(specs: Sequence[str], reads: Sequence[str] = (), db: str | None = None,
                  annotate: str | None = None, annotate_suffixes: Sequence[str] = ()) -> None:
    """``--output``'s specs checked before a command loads its model: each name registered, each
    target the sink's own check accepts (a factory's ``check_target(target)``, where it has one:
    ``jsonl`` a new file in a folder that takes one), and no target is a file being read
    (``reads``: files, or folders whose files are read), the results database's file (``db``),
    the ``--annotate`` video or, in the ``--annotate`` folder, a file named as its copies are
    (``annotate_suffixes``: ``results.jsonl`` beside the copies is fine), the file standard output is
    redirected to, or another ``--output``'s: those would be emptied when the output opens, or
    two outputs would write one file (a review: ``--output jsonl:photo.jpg`` destroyed the photo
    it analysed; a user test: ``--output jsonl:x.csv > x.csv`` mixed JSON into the CSV).
    ``ValueError`` in one sentence."""
    import os

    if not specs:  # (no look at the inputs: a folder of 100,000 photos)
        return
    seen: dict[str, str] = {}
    # (path, what it is, the suffixes of the files inside it that are guarded too: None for all)
    guarded: list[tuple[str, str, Sequence[str] | None]] = [
        (os.path.realpath(r), "an input being read", None) for r in reads if os.path.exists(r)]
    if annotate is not None:
        guarded.append((os.path.realpath(annotate), "--annotate's output", annotate_suffixes))
    try:
        stdout = os.fstat(1)
    except OSError:  # (no standard output)
        stdout = None
    if db is not None:
        try:
            from ..store.engine import sqlite_path

            path = sqlite_path(db)
        except (ImportError, ValueError):  # (said by --db itself, in its own sentence)
            path = None
        if path is not None:
            guarded.append((os.path.realpath(path), "the results database (--db)", ()))
    for spec in specs:
        target = spec.partition(":")[2]
        check = getattr(SINKS.get(output_name(spec)), "check_target", None)
        if target and "://" not in target:  # (a file: an input being read, or another output's, said as such
            _check_file(spec, target, seen, stdout, guarded)  # before the sink's own check)
        if callable(check):
            try:
                check(target)
            except ValueError as exc:
                raise ValueError(f"--output {spec!r}: {exc}") from None


def _check_file(spec: str, target: str, seen: dict[str, str], stdout: Any,
                guarded: Sequence[tuple[str, str, Sequence[str] | None]]) -> None:
    """``ValueError`` where the file ``target`` of ``--output spec`` is another output's (``seen``,
    which it joins), the file standard output is redirected to, or ``guarded``'s (see
    :func:`check_outputs`)."""
    import os

    real = os.path.realpath(target)
    if real in seen:
        raise ValueError(f"--output {spec!r} writes the file of --output {seen[real]!r}: give each its own")
    seen[real] = spec
    if stdout is not None and _regular_file(stdout) and os.path.exists(real) \
            and os.path.samestat(stdout, os.stat(real)):
        raise ValueError(f"--output {spec!r}: {target} is the file standard output is written to; give "
                         "another file")
    for path, what, suffixes in guarded:
        inside = real.startswith(path.rstrip(os.sep) + os.sep) and not os.path.isfile(path) and (
            suffixes is None or os.path.splitext(real)[1].lower() in suffixes)
        if real == path or inside:
            where = "is" if real == path else "is inside"
            raise ValueError(f"--output {spec!r}: {target} {where} {what}, which it would overwrite; give "
                             "another file")


def _regular_file(st: Any) -> bool:
    import stat

    return stat.S_ISREG(st.st_mode)


def build_output(spec: str, tasks: Sequence[Any]) -> NamedSink:
    """The sink ``--output NAME:TARGET`` asks for, built by :data:`SINKS`'s ``NAME`` with
    ``TARGET``. ``UnknownName`` (a ``KeyError``) for a name no registration gives; ``ValueError``
    in one sentence for a form that is not ``NAME[:TARGET]``, a target the sink refuses, or a
    factory whose answer has no ``write``; the machine's refusal (``OSError``) as it is."""
    name, _, target = spec.partition(":")
    factory = SINKS.get(output_name(spec))
    try:
        sink = factory(target, list(tasks))
    except OSError:
        raise  # the machine's refusal (exit 1), naming its file
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--output {spec!r}: {exc}") from None
    except Exception as exc:  # a plugin factory's own mistake, named (not a traceback)
        raise ValueError(f"--output {spec!r}: the sink {name!r} could not be built: {type(exc).__name__}: {exc}") \
            from None
    if lacks := _lacks_sink_methods(sink):
        raise ValueError(f"--output {spec!r}: the sink {name!r} was built as {lacks}")
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
        _each(s.close for s in self.sinks)

    def abandon(self) -> None:
        _each((getattr(s, "abandon", None) or s.close) for s in self.sinks)


def _each(calls: Any) -> None:
    """Call each of ``calls``; the first exception is raised after all were called (a sink that
    fails to close leaves the others to close, not open)."""
    first: BaseException | None = None
    for call in calls:
        try:
            call()
        except Exception as exc:
            first = first or exc
    if first is not None:
        raise first
