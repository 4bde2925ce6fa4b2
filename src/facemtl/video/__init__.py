"""Live video: sources (files, cameras, URLs, folders of frames), a face tracker, per-track
smoothing of the answers, the stream loop and the annotated video writer.

Needs the ``video`` extra (PyAV for decoding and H.264 encoding, SciPy for the tracker's
assignment)::

    from facemtl.video import stream_events, VideoAnalyzer, StreamSettings
    for event in stream_events("street.mp4", detect_every=5):
        ...   # ImageResult per frame (faces with track ids), TrackResult per ended track
"""

from __future__ import annotations

import importlib
from typing import Any

#: x264's speed presets for the annotated video, fastest first: a faster one takes less CPU a frame
#: and writes a larger file at the same quality (``crf``). Here, not in ``writer``, so that the
#: command line can offer them without importing the writer.
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")

_EXPORTS = {
    "stream_events": "analyzer", "Stream": "stream", "StreamSettings": "settings", "StreamStats": "settings",
    "VideoAnalyzer": "analyzer",
    "Tracker": "tracker", "TrackerSettings": "tracker", "KalmanBoxFilter": "tracker", "iou_matrix": "tracker",
    "TrackSmoother": "smoothing", "QualitySettings": "smoothing", "face_quality": "smoothing",
    "Source": "sources", "SourceSettings": "sources", "SourceError": "sources", "open_sources": "sources",
    "SOURCES": "sources", "Frame": "sources",
    "FrameReader": "reader",
    "VideoWriterSink": "writer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(name)
