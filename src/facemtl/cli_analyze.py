"""``facemtl analyze``: every face in photos, written as a table, JSON lines, CSV, annotated
copies and the results database.

Kept apart from :mod:`facemtl.cli`, which lists it in its command table.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import sys
from typing import Any, Iterator, Sequence

from .cli_args import accurate_flags, detector_flag, output_flag
from .cli_args import db_flags as _db_flags
from .cli_args import positive as _positive
from .cli_args import runtime_flag as _runtime_flag
from .cli_args import stderr_line as _stderr_line


def analyze(
    paths: Sequence[str],
    as_json: bool = False,
    as_csv: bool = False,
    annotate_dir: str | None = None,
    aligned: bool = False,
    checkpoint: str | Sequence[str] | None = None,
    detector: str = "mtcnn",
    device: str = "auto",
    progress: bool | None = None,
    min_face: float | None = None,
    workers: int | None = None,
    runtime: str | None = None,
    threads: int | None = None,
    db: str | None = None,
    thumbnails: bool = False,
    fusion: str | bool | None = None,
    skip_stored: bool = False,
    outputs: Sequence[str] = (),
    sinks: Sequence[Any] = (),
) -> int:
    """Analyse every face in PATHs; returns the exit status (1 only when no file could be read, or
    an output of ``outputs`` / ``sinks`` failed).

    ``checkpoint``: a model file, or several (an ensemble); default: the shipped model.
    ``fusion``: the accurate variant (``True``: the shipped fusion file, or a fusion file's path).

    ``db``: also store the faces in the results database at this URL or SQLite file
    (``thumbnails``: with a small crop of each face; ``skip_stored``: leave out the files whose
    faces an earlier ``analyze`` stored there, to go on after a stopped run).

    ``outputs``: more outputs by name, ``NAME:TARGET`` (``--output``; :data:`facemtl.sinks.SINKS`);
    ``sinks``: more :class:`~facemtl.sinks.Sink` objects. Each gets every record; one that fails
    is said once and left out, the others go on, and the exit status is 1.

    Every input gets a record: a path that does not exist gets one with status ``error``
    (written first), a folder that cannot be searched a warning. With ``annotate_dir``, each
    record names its image's annotated copy (``annotated``: its path; an ``annotated`` column in
    CSV); a copy that cannot be written makes its image's status ``error`` (its faces are kept).
    """
    from .inference import FaceAnalyzer
    from .inference.inputs import expand_inputs
    from .inference.results import ImageResult
    from .sinks import AnnotateSink, CsvSink, JsonLinesSink, TableSink, build_output
    from .sinks.annotate import KEEP_SUFFIXES
    from .sinks.base import check_outputs, passed_sinks
    from .sinks.db import open_db_sink
    from .system import SIGNAL_STATUS, out_of_memory, stop_on_signals

    def warn(path: str, reason: str) -> None:
        print(f"facemtl: warning: {path}: {reason}", file=sys.stderr)

    files, missing = expand_inputs(list(paths), on_skip=warn)
    missing_why = [(m, "a symbolic link that leads nowhere (broken, or a loop)" if os.path.islink(m) else
                    "no file matches this pattern" if any(ch in m for ch in "*?[") else "no such file")
                   for m in missing]
    for m, why in missing_why:
        warn(m, why)
    if not files and not missing:
        raise FileNotFoundError("no image files found in " + ", ".join(paths))
    if thumbnails and db is None:
        raise ValueError("--thumbnails stores face crops in the results database: add --db URL")
    if skip_stored and db is None:
        raise ValueError("--skip-stored leaves out the files whose faces a results database holds: add --db URL")
    # before the model loads; never over an input, the database, an annotated copy
    check_outputs(outputs, files, db, annotate_dir, [*KEEP_SUFFIXES, ".png"])
    sinks = passed_sinks(sinks)
    annotated = None
    if annotate_dir:
        files = _outside_annotate_folder(files, paths, annotate_dir, warn)
        # copies mirror the inputs' folders below their common one (cam1/001.jpg, cam2/001.jpg)
        common = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files]) if files else None
        annotated = AnnotateSink(annotate_dir, root=common)
        annotated.check_folder()
        annotated.plan(files)  # every copy's name from the inputs alone, not the order they are read in
    # The first SIGINT (Ctrl-C) or SIGTERM stops reading new files; the images already being read
    # (decoded and searched by a worker, or done) are answered and written, those queued for the
    # workers are dropped (a user test: the 64 queued were all read first, 13 s past the signal),
    # then the exit status says which signal it was. A second one aborts.
    def on_first(signum: int) -> None:  # os.write: the signal may land inside another write to stderr
        os.write(2, f"facemtl: {signal.Signals(signum).name}: finishing the images already read "
                    "(again to abort)\n".encode())

    with stop_on_signals(on_first) as received:
        todo = itertools.takewhile(lambda _: not received, files)
        with FaceAnalyzer(checkpoint, detector, device, min_face=min_face, workers=workers, runtime=runtime,
                          keep_images=annotate_dir is not None or thumbnails, threads=threads,
                          fusion=fusion) as analyzer:
            # the database first: a refused source name leaves no other output begun (a CSV header)
            stored = open_db_sink(db, analyzer.predictor.info, thumbnails, absolute_files=True) if db else None
            extra: list[Any] = []  # --output's sinks, and those passed in
            lost = 0  # of them, how many failed

            # the records of missing paths wait for the first image answered (or the run's end): written at once,
            # they opened the --output files, and a stop before the first result then left an earlier run's
            # files emptied (a review)
            held: list[ImageResult] = []

            def to_extra(res: ImageResult | None) -> None:
                """``res`` (``None``: only the records held) to each of ``extra``; one that fails is said once and
                left out."""
                nonlocal lost
                records = [*held, *([res] if res is not None else [])]
                held.clear()
                for sink in list(extra):
                    try:
                        for rec in records:
                            sink.write(rec)
                    except OSError as exc:
                        extra.remove(sink)
                        lost += 1
                        _stderr_line(f"facemtl: error: {exc.strerror or exc}; that output stops, the others go on")
                        with contextlib.suppress(OSError, RuntimeError):
                            sink.abandon()  # (its file closed; what it wrote stays)

            try:  # (on any failure before the loop, the database's session is ended, as at any other stop)
                for spec in outputs:
                    extra.append(build_output(spec, analyzer.tasks))
                if skip_stored:  # going on after a stopped run: its --output files are added to, not replaced
                    for sink in extra:
                        getattr(sink, "continue_file", lambda: None)()
                if annotated is not None:  # (a CSV file: its column of the copies' paths, as --csv's)
                    for sink in extra:
                        getattr(sink, "record_annotated", lambda: None)()
                extra += sinks
                if skip_stored and stored is not None:
                    absolute = [os.path.abspath(f) for f in files]
                    done_before = stored.store.stored_files(absolute)
                    if done_before:
                        files = [f for f, a in zip(files, absolute) if a not in done_before]
                        todo = itertools.takewhile(lambda _: not received, files)
                    print(f"facemtl: --skip-stored: {len(done_before):,} of {len(absolute):,} files were "
                          f"analysed by an earlier run (faces stored, or none found); analysing the other "
                          f"{len(files):,}", file=sys.stderr)
                with _naming_our_output():  # (a CSV header, the records of missing paths)
                    out = CsvSink(analyzer.tasks, annotated=annotated is not None) if as_csv else \
                        JsonLinesSink() if as_json else TableSink()
                    for m, why in missing_why:  # (in every output, as --json writes them: a user test)
                        out.write(missing_record := ImageResult(file=m).fail(why))
                        held.append(missing_record)
            except BaseException:
                if stored is not None:
                    stored.close()
                for sink in extra:
                    with contextlib.suppress(OSError, RuntimeError):
                        sink.abandon()  # (NamedSinks: a file of --output left as it was)
                raise
            show_bar = progress if progress is not None else (len(files) > 1 and sys.stderr.isatty())
            bar = None
            if show_bar:
                from tqdm import tqdm

                bar = tqdm(total=len(files), unit="image", file=sys.stderr)
            readable = done = odd = written = 0
            completed = False
            try:
                for res in analyzer.analyze_files(todo, aligned=aligned, stop=lambda: bool(received)):
                    done += 1
                    readable += res.status != "error"
                    if aligned and res.width and not _looks_like_a_crop(res.width, res.height, analyzer.size):
                        odd += 1
                        if odd <= 5:  # the first few by name, the rest counted at the end
                            warn(res.name, f"{res.width}x{res.height} px does not look like an aligned face crop "
                                           "(--aligned takes square crops, aligned as UTKFace's): its answers mean "
                                           "little")
                    if stored is not None:
                        stored.write(res)
                    if annotated is not None:
                        try:
                            annotated.write(res)
                        except OSError as exc:  # this file's copy only: say so in its record, keep its faces
                            res.fail(f"annotated copy not written: {exc.strerror or exc}", keep_faces=True)
                    with _naming_our_output():
                        out.write(res)
                    to_extra(res)
                    written += 1
                    if bar is not None:
                        bar.update(1)
                completed = not received
                if completed and held:  # (no image answered: the missing paths' records, as the run ended)
                    to_extra(None)
            except Exception as exc:  # the run cannot go on: say what was kept before saying why
                kept = f"{written} of {len(files)} images answered and written before it stopped, the rest not read"
                if out_of_memory(exc):
                    why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    _stderr_line(f"facemtl: error: out of memory ({why}): {kept} (fewer --workers "
                                 "and --threads need less)")
                    return 1
                if written:
                    _stderr_line(f"facemtl: {kept}")
                raise
            finally:
                try:
                    out.close()
                finally:
                    if bar is not None:
                        bar.close()
                    if stored is not None:
                        stored.close()
                    for sink in extra:
                        try:  # stopped before a first result: an --output file of an earlier run is left as it
                            if written or completed:  # was, not emptied (a user test)
                                sink.close()
                            else:
                                sink.abandon()
                        except (OSError, RuntimeError) as exc:  # (RuntimeError: a results database's last batch)
                            lost += 1
                            _stderr_line(f"facemtl: error: {getattr(exc, 'strerror', None) or exc}")
    if odd > 5:
        print(f"facemtl: warning: {odd - 5} more images did not look like aligned face crops", file=sys.stderr)
    if received:
        what = (f"all {done} images" if done == len(files) else f"{done} of {len(files)} images") + \
            " answered and written" + ("" if done == len(files) else ", the rest not read")
        again = " (to go on later without storing faces twice: the same command with --skip-stored" + \
            (", which adds to its --output files)" if outputs else ")") \
            if db and done < len(files) and not skip_stored else ""
        print(f"facemtl: stopped by {signal.Signals(received[0]).name}: {what}{again}", file=sys.stderr)
        return SIGNAL_STATUS[received[0]]
    if not readable and (files or missing):  # each file's reason is in its record; say on stderr too that nothing was read
        _stderr_line(f"facemtl: error: none of the {len(files) + len(missing)} inputs could be read as an image "
                     "(each record says why)" if len(files) + len(missing) > 1 else
                     "facemtl: error: the input could not be read as an image (its record says why)")
        return 1
    return 1 if lost else 0



@contextlib.contextmanager
def _naming_our_output() -> Iterator[None]:
    """An ``OSError`` from our own output (standard output, redirected: a full disk) names it, as
    the command line's error sentence names a file."""
    try:
        yield
    except OSError as exc:
        exc.filename = exc.filename or "standard output"
        raise


def _looks_like_a_crop(width: int, height: int, size: int) -> bool:
    """Whether a ``width x height`` image can be an aligned face crop for a ``size`` px network:
    roughly square (sides within 1.5 of each other) and at least a quarter of the input size."""
    return max(width, height) <= 1.5 * min(width, height) and min(width, height) >= size / 4



def _outside_annotate_folder(files: list[str], paths: Sequence[str], annotate_dir: str,
                             warn: Any) -> list[str]:
    """``files`` without the annotated copies of an earlier run. A PATH that is the ``--annotate``
    folder, or inside it, is refused: its copies would overwrite the photos being read."""
    out_dir = os.path.realpath(annotate_dir)

    def inside(path: str) -> bool:
        real = os.path.realpath(path)
        return real == out_dir or real.startswith(out_dir + os.sep)

    for a in paths:
        if os.path.exists(a) and inside(a):
            raise ValueError(f"{a} is in the --annotate folder {annotate_dir}: its annotated copies would overwrite "
                             "the images being read; choose another folder")
    kept = [f for f in files if not inside(f)]
    if len(kept) < len(files):
        warn(annotate_dir, f"{len(files) - len(kept)} images in the --annotate folder left out (annotated copies "
                           "of an earlier run)")
    return kept



def analyze_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image files, folders (searched recursively, symlinked folders followed) or globs")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per input file, one per line")
    fmt.add_argument("--csv", action="store_true", help="CSV, one row per face")
    p.add_argument("--annotate", metavar="DIR", help="write copies of the images with boxes and labels drawn "
                                                     "(JPEG and PNG keep their format; reruns overwrite)")
    p.add_argument("--aligned", action="store_true", help="each image is one aligned face crop: no detection")
    p.add_argument("--checkpoint", "--model", dest="checkpoint", action="append", metavar="MODEL_FILE",
                   help="a model file (from 'facemtl train' or 'facemtl export') instead of the default one; "
                        "repeat it for an ensemble (the mean of the networks' outputs)")
    _runtime_flag(p)
    p.add_argument("--threads", type=_positive(int), metavar="N",
                   help="the runtime's intra-op threads (default: one per core, waiting without spinning)")
    detector_flag(p, "face detector; its 'score' is on its own scale (mtcnn: probability 0-1; dlib: SVM margin, "
                     "about 0.25-3)")
    p.add_argument("--min-face", type=_positive(float), metavar="PX",
                   help="smallest face to look for, in pixels of the photo as the detector sees it (shrunk to "
                        "1024 px on its long side); faces whose box is smaller are left out. Default: a search from "
                        "40 px, nothing left out. Each halving costs about 4x the search. With mtcnn it also sets the "
                        "scales a face is searched at, so a larger face's box, landmarks and answers can move a "
                        "little with it: compare runs made at one --min-face")
    p.add_argument("--workers", type=_positive(int), metavar="N",
                   help="threads that decode and search photos, at least 1 (default: one per core)")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (bars are drawn only when stderr is a terminal)")
    accurate_flags(p, "about 100 ms more per face on a 2-core CPU")
    output_flag(p)
    _db_flags(p)
    p.add_argument("--skip-stored", action="store_true",
                   help="with --db: leave out the files an earlier 'analyze' stored faces of, or found no face "
                        "in, in that database, to go on after a stopped run without storing them twice (files "
                        "that could not be read are tried again); its --output files are added to, not replaced")



def analyze_run(a: argparse.Namespace) -> int:
    return analyze(a.paths, a.json, a.csv, a.annotate, a.aligned, a.checkpoint, a.detector, a.device,
                   False if a.no_progress else None, a.min_face, a.workers, a.runtime, a.threads,
                   db=a.db, thumbnails=a.thumbnails, fusion=a.fusion or a.accurate, skip_stored=a.skip_stored,
                   outputs=a.output)
