"""Sinks: where results go. JSON lines, CSV, a table, annotated images (and, with the
``serve`` extra, the results database)."""

from .annotate import AnnotateSink, draw_faces
from .base import MultiSink, Sink
from .text import CsvSink, JsonLinesSink, TableSink, VideoCsvSink

__all__ = ["Sink", "MultiSink", "TableSink", "JsonLinesSink", "CsvSink", "VideoCsvSink", "AnnotateSink", "draw_faces"]
