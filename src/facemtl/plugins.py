"""Plugins: packages of yours that register task types, backbones, loss weightings or face
detectors, found without editing facemtl.

A model file names its task types, a recipe its backbone and weighting, a command line its
detector; when a name is not registered, facemtl looks for a plugin providing it and looks again
(:meth:`facemtl.registry.Registry.get`, :func:`look_for`), so a model trained with a task type of
yours loads in any process where your package is installed, the command line included. Three ways
to declare one (any may be used together):

* one entry point per registration, in the group of its registry (:data:`GROUPS`)::

      [project.entry-points."facemtl.task_types"]
      bmi = "myplug.tasks:Bmi"       # a Task subclass; registered as "bmi" if its module does not

      [project.entry-points."facemtl.backbones"]
      my_net = "myplug.train:my_net"

  Only the entry point of the name asked for is imported: a process reading a model of task type
  ``bmi`` imports ``myplug.tasks`` and never ``myplug.train`` (which may need torch, absent from
  the plain install). Runtimes point at a :class:`~facemtl.inference.runtimes.RuntimeSpec`.

* a whole module in the ``facemtl.plugins`` group, imported when any name is missing::

      [project.entry-points."facemtl.plugins"]
      myplug = "myplug"          # the module whose import registers your types

* ``FACEMTL_PLUGINS=myplug,other.module`` in the environment (torchrun's processes inherit it).

Entry points are read only when a name is missing (reading every installed package's metadata
costs tens of milliseconds, which a command that needs no plugin does not pay), then once per
process. In Python you can also simply ``import myplug`` before using facemtl.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from types import ModuleType
from typing import Any, Callable

#: The entry-point group a package declares its plugin module in.
GROUP = "facemtl.plugins"
#: Environment variable: modules to import, separated by commas.
ENV = "FACEMTL_PLUGINS"
#: The entry-point group of each registry's kind, one registration per entry point (``name =
#: "module:object"``): the object is a registry's factory (a class or function), or for runtimes a
#: ``RuntimeSpec``.
GROUPS = {"task type": "facemtl.task_types", "backbone": "facemtl.backbones",
          "loss weighting": "facemtl.weightings", "face detector": "facemtl.detectors", "sink": "facemtl.sinks",
          "video source": "facemtl.sources", "runtime": "facemtl.runtimes"}

_lock = threading.RLock()  # (re-entrant: a plugin's import may look a name up)
_done = False
_failed: dict[str, str] = {}  # module -> why it could not be imported
_short: dict[str, str] = {}  # module -> its sentence without the reason, once the warning has said it
_entry_points: Any = None  # every installed package's entry points, read once


class PluginError(ValueError):
    """A name is missing and a declared plugin, perhaps the one providing it, failed to import."""


def load_plugins() -> bool:
    """Import every declared plugin module, once per process; ``True`` if this call tried any.

    Each module is imported on its own: one that fails is remembered (:func:`failures`) and
    the others still load."""
    global _done
    with _lock:
        if _done:
            return False
        _done = True
        wanted = declared_modules()
        for module, declared in wanted:
            try:
                importlib.import_module(module)
            except Exception as exc:  # anything a plugin's import raises: named, never a traceback
                short = f"plugin {module!r} (from {declared}) could not be loaded"
                _failed[module] = f"{short}: {type(exc).__name__}: {exc}"
                # said now too: what it registered before failing works, and a run using only that
                # would otherwise never hear of the failure (a user test)
                logging.getLogger(__name__).warning(_failed[module])
                _short[module] = short
        return bool(wanted)


def failures() -> list[str]:
    """One sentence per declared plugin that failed to import (empty when all loaded)."""
    return list(_failed.values())


def said_above(message: str) -> str:
    """``message`` with each failed plugin's sentence, which its warning has said already, cut to
    "plugin 'x' (from ...) could not be loaded (said above)": the command line's last error, a
    name that the failed plugin may have provided, repeated the whole warning a line below it
    (a note's "left" item). An error in Python keeps the whole sentence (a caller catching it
    may never see the log)."""
    for module, short in _short.items():
        message = message.replace(_failed[module], f"{short} (said above)")
    return message


def failed_modules() -> dict[str, str]:
    """The whole-module plugins that failed to import, each with its sentence."""
    return dict(_failed)


def declared_modules() -> list[tuple[str, str]]:
    """The whole-module plugins declared, with how: ``(module, "FACEMTL_PLUGINS")`` or ``(module,
    "the facemtl.plugins entry point 'NAME'")``."""
    wanted = [(m.strip(), ENV) for m in os.environ.get(ENV, "").split(",") if m.strip()]
    return wanted + [(ep.value.split(":")[0], f"the {GROUP} entry point {ep.name!r}") for ep in _declared(GROUP)]


def declared_names(kind: str) -> list[str]:
    """The names declared as entry points of ``kind``'s group (:data:`GROUPS`), loaded or not."""
    return sorted({ep.name for ep in declared_entry_points(kind)})


def declared_entry_points(kind: str) -> list[Any]:
    """The installed packages' entry points in ``kind``'s group (:data:`GROUPS`), loaded or not."""
    return _declared(GROUPS[kind]) if kind in GROUPS else []


def look_for(kind: str, name: str, known: Callable[[], bool], take: Callable[[Any], None]) -> None:
    """Let a plugin provide the missing ``name`` of ``kind``; the caller then looks again.

    First the entry point declared as ``name`` in ``kind``'s group (:data:`GROUPS`): only it is
    imported, and what it points at goes to ``take`` (which registers it) unless importing it
    registered ``name`` already (``known()``). Then, if still missing, every whole-module plugin
    (:func:`load_plugins`). An entry point that fails to import, points at a module, or that
    ``take`` refuses (``ValueError``) is a :class:`PluginError` naming it."""
    with _lock:  # (two threads missing one name: the second finds it registered)
        _look_for(kind, name, known, take)


def failure_suffix() -> str:
    """`` (SENTENCE; SENTENCE)``: the declared plugins that failed to import, for an error that a
    missing name ends; ``""`` when none failed."""
    return f" ({'; '.join(_failed.values())})" if _failed else ""


def _look_for(kind: str, name: str, known: Callable[[], bool], take: Callable[[Any], None]) -> None:
    named = [ep for ep in declared_entry_points(kind) if ep.name == name]
    if named and not known():
        if len({ep.value for ep in named}) > 1:  # (the first found was taken, without a word)
            said = "; ".join(sorted(f"{package_of(ep)}: {ep.value!r}" for ep in named))
            raise PluginError(f"{kind} {name!r} is declared by several installed packages ({said}) in "
                              f"{GROUPS[kind]}: uninstall one, or rename its entry point")
        where = f"the {GROUPS[kind]} entry point {name} = {named[0].value!r}"
        try:
            obj = named[0].load()
        except Exception as exc:  # anything a plugin's import raises: named, never a traceback
            raise PluginError(f"{kind} {name!r} could not be loaded ({where}): {type(exc).__name__}: {exc}") from None
        if known():  # its module registered it
            return
        if isinstance(obj, ModuleType):
            raise PluginError(f"{where} names a module, which registered no {kind} {name!r}: name what to register "
                              "after a colon (module:Name)")
        try:
            take(obj)
        except ValueError as exc:
            raise PluginError(f"{where}: {exc}") from None
        return
    load_plugins()


def package_of(ep: Any) -> str:
    """The installed package that declares the entry point ``ep`` (its distribution's name)."""
    dist = getattr(ep, "dist", None)
    return getattr(dist, "name", None) or "a package"


def _declared(group: str) -> list[Any]:
    """The installed packages' entry points in ``group`` (all groups read once per process)."""
    global _entry_points
    with _lock:
        if _entry_points is None:
            from importlib.metadata import entry_points

            _entry_points = entry_points()
        return list(_entry_points.select(group=group))
