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
