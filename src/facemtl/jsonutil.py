"""JSON for the numbers facemtl writes: NumPy scalars and arrays, tensors, paths."""

from __future__ import annotations

import json
from typing import Any


def jsonable(x: Any) -> Any:
    """``json.dumps``'s ``default``: arrays and tensors as lists, NumPy scalars as numbers, the rest as text."""
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def dumps(obj: Any, **kw: Any) -> str:
    return json.dumps(obj, default=jsonable, **kw)


def dumps_strict(obj: Any, **kw: Any) -> str:
    """:func:`dumps` of ``finite(obj)`` (:func:`finite`): strict JSON (``jq``, browsers and other
    languages read it), a NaN metric written as ``null``. Read it back with :func:`loads_metrics`."""
    return json.dumps(finite(obj), default=jsonable, allow_nan=False, **kw)


def loads_metrics(text: str) -> Any:
    """A metrics file written by :func:`dumps_strict` (or an older one with bare ``NaN``), every
    ``null`` read back as NaN: in these files null only ever stood for a metric that could not be
    computed (no labelled face), and NaN is what the code computing with them expects. A top-level
    ``_info`` (who wrote it, when) is read as it stands."""
    obj = json.loads(text)
    if isinstance(obj, dict):
        return {k: v if k == "_info" else nan_for_null(v) for k, v in obj.items()}
    return nan_for_null(obj)


def nan_for_null(obj: Any) -> Any:
    """``obj`` with every ``None`` in its dicts and lists replaced by ``float("nan")``."""
    if obj is None:
        return float("nan")
    if isinstance(obj, dict):
        return {k: nan_for_null(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [nan_for_null(v) for v in obj]
    return obj


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (NumPy's too) replaced by ``None``: JSON has no
    NaN, and ``json.dumps`` writes a bare ``NaN`` that strict readers (``jq``, browsers) refuse.
    ``None`` (null) is what a metric with no labelled face to be computed on reads as."""
    import math

    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return finite(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
