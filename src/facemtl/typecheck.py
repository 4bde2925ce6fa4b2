"""Settings read from YAML (or a command line) checked against the type hints of the
dataclass that holds them: recipe sections (:mod:`facemtl.config`) and task specs
(:func:`facemtl.tasks.build_task`).

Written here rather than taken from a validation library (pydantic, typeguard) because
the rules are few and facemtl-specific: each mistake must read as one sentence naming the
key, the value and what was expected, and the settings stay plain dataclasses. Two
forgiving rules: a number with nothing after the point is taken where a whole number is
expected (``batch_size: 32.0``), and text that reads as a number is taken as that number
(YAML 1.1, which PyYAML follows, reads ``1e-3`` as text).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Union


class SettingTypeError(ValueError):
    """A setting whose value does not have its declared type; the message is one sentence."""


def hints(cls: type) -> dict[str, Any]:
    """The evaluated type hints of a dataclass's fields (``{}`` where they cannot be evaluated)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a hint naming something only imported for type checkers
        return {}


def describe(tp: Any) -> str:
    """What a type hint asks for, as a person says it: ``a whole number``, ``a list of numbers``..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "any value"
    if tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        parts = [describe(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"{text} or null" if type(None) in args else text
    if tp is bool:
        return "true or false"
    if tp is int:
        return "a whole number"
    if tp is float:
        return "a number"  # finite: NaN and infinity are refused
    if tp is str:
        return "text"
    if origin is list:
        return f"a list of {_plural(describe(args[0]))}" if args else "a list"
    if origin is dict:
        if len(args) != 2 or args[1] is Any:
            return "a mapping"
        values = _plural(describe(args[1]))
        return f"a mapping to ({values})" if " or " in values else f"a mapping of {values}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _plural(text: str) -> str:
    """``a list of texts or null`` -> ``lists of texts or null``: each alternative's noun, once."""
    for a, b in (("a whole number", "whole numbers"), ("a number", "numbers"), ("text", "texts"),
                 ("a mapping", "mappings"), ("a list", "lists"), ("true or false", "true/false values")):
        text = re.sub(rf"(?<![\w/]){re.escape(a)}(?!\w)", b, text)
    return text


class _Mismatch(Exception):
    pass


def coerce(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (see the module docstring for the two forgiving rules);
    raises :class:`_Mismatch` when it is not one."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or dataclasses.is_dataclass(tp):
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin in (Union, types.UnionType):
        for a in sorted(args, key=lambda a: a is str):  # try text last: "3" for int | str is 3
            try:
                return coerce(value, a)
            except _Mismatch:
                pass
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp in (int, float):
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise _Mismatch from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _Mismatch
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise _Mismatch
            return int(value)
        return value  # an int stays an int where a number is asked for (1, not 1.0, in outputs)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return [coerce(v, args[0]) for v in value] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return {k: coerce(v, args[1]) for k, v in value.items()} if len(args) == 2 else value
    return value


def check(value: Any, tp: Any, key: str) -> Any:
    """``value`` coerced to ``tp``, or :class:`SettingTypeError` naming ``key``, the value and the type.

    A mapping or list is checked entry by entry, so the sentence names the entry that is wrong
    (``data.columns.glasses``, ``tasks[2]``), not the whole value. A true/false where text is
    asked for gets a hint: YAML 1.1 reads unquoted yes/no/on/off as true/false."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType) and value is not None:
        inner = [a for a in args if a is not type(None)]
        kind = {dict: dict, list: (list, tuple)}.get(typing.get_origin(inner[0]) if len(inner) == 1 else None)
        if kind and isinstance(value, kind):  # a mapping or list for "X or null": its entries checked as X's
            return check(value, inner[0], key)
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return {k: check(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if origin is list and args and isinstance(value, (list, tuple)):
        return [check(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    try:
        return coerce(value, tp)
    except _Mismatch:
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        hint = (" (YAML reads unquoted yes/no/on/off as true/false: quote them, 'yes')"
                if isinstance(value, bool) and "text" in describe(tp) else "")
        raise SettingTypeError(f"setting '{key}' is {shown}, but it must be {describe(tp)}{hint}") from None


def did_you_mean(key: str, valid: list[str]) -> str:
    """`` (did you mean 'num_classes'?)`` when a valid key is close to ``key``, else ``""``."""
    close = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
