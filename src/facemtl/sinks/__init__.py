"""Sinks: where results go. JSON lines, CSV, a table, annotated images (and, with the
``serve`` extra, the results database)."""

from .annotate import AnnotateSink, draw_faces
from .base import SINKS, MultiSink, NamedSink, Sink, build_output
from .text import CsvFile, CsvSink, JsonLinesFile, JsonLinesSink, TableSink, VideoCsvSink

__all__ = ["SINKS", "Sink", "MultiSink", "NamedSink", "build_output", "TableSink", "JsonLinesSink", "JsonLinesFile",
           "CsvSink", "CsvFile", "VideoCsvSink", "AnnotateSink", "draw_faces"]
