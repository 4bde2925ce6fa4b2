"""Plugins: packages of yours that register task types, backbones, loss weightings or face
detectors, found without editing facemtl.

A model file names its task types, a recipe its backbone and weighting, a command line its
detector; when a name is not registered, facemtl loads the plugins once and looks again
(:meth:`facemtl.registry.Registry.get`), so a model trained with a task type of yours loads in
any process where your package is installed, the command line included. Two ways to declare
one (both may be used):

* an entry point in the ``facemtl.plugins`` group of your package's ``pyproject.toml``::

      [project.entry-points."facemtl.plugins"]
      myplug = "myplug"          # the module whose import registers your types

* ``FACEMTL_PLUGINS=myplug,other.module`` in the environment (torchrun's processes inherit it).

Entry points are looked up only when a name is missing (reading every installed package's
metadata costs tens of milliseconds, which a command that needs no plugin does not pay).
In Python you can also simply ``import myplug`` before using facemtl.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading

#: The entry-point group a package declares its plugin module in.
GROUP = "facemtl.plugins"
#: Environment variable: modules to import, separated by commas.
ENV = "FACEMTL_PLUGINS"

_lock = threading.RLock()  # (re-entrant: a plugin's import may look a name up)
_done = False
_failed: dict[str, str] = {}  # module -> why it could not be imported


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
        from importlib.metadata import entry_points

        wanted = [(m.strip(), ENV) for m in os.environ.get(ENV, "").split(",") if m.strip()]
        wanted += [(ep.value.split(":")[0], f"the {GROUP} entry point {ep.name!r}")
                   for ep in entry_points(group=GROUP)]
        for module, declared in wanted:
            try:
                importlib.import_module(module)
            except Exception as exc:  # anything a plugin's import raises: named, never a traceback
                _failed[module] = (f"plugin {module!r} (from {declared}) could not be loaded: "
                                   f"{type(exc).__name__}: {exc}")
                # said now too: what it registered before failing works, and a run using only that
                # would otherwise never hear of the failure (a user test)
                logging.getLogger(__name__).warning(_failed[module])
        return bool(wanted)


def failures() -> list[str]:
    """One sentence per declared plugin that failed to import (empty when all loaded)."""
    return list(_failed.values())
