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
