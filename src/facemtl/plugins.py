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
import os

#: The entry-point group a package declares its plugin module in.
GROUP = "facemtl.plugins"
#: Environment variable: modules to import, separated by commas.
ENV = "FACEMTL_PLUGINS"

_done = False


def load_plugins() -> bool:
    """Import every declared plugin module, once per process; ``True`` if this call imported any.

    A plugin that fails to import is a one-sentence ``ValueError`` naming it."""
    global _done
    if _done:
        return False
    _done = True
    from importlib.metadata import entry_points

    wanted = [(m.strip(), ENV) for m in os.environ.get(ENV, "").split(",") if m.strip()]
    wanted += [(ep.value.split(":")[0], f"the {GROUP} entry point {ep.name!r}") for ep in entry_points(group=GROUP)]
    for module, declared in wanted:
        try:
            importlib.import_module(module)
        except Exception as exc:  # anything a plugin's import raises: name the plugin, not a traceback
            raise ValueError(f"plugin {module!r} (from {declared}) could not be loaded: "
                             f"{type(exc).__name__}: {exc}") from None
    return bool(wanted)
