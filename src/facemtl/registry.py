"""A tiny name -> factory registry, used where users extend facemtl.

Backbones, task types, loss weightings and face detectors register themselves with a
decorator, and configs and the command line refer to them by name::

    BACKBONES = Registry("backbone")

    @BACKBONES.register("my_net")
    def my_net(**kw): ...

    BACKBONES.build("my_net", pretrained=False)
"""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class NameNotFound(KeyError):
    """A ``KeyError`` that is one sentence for the user (a name not found: a label column, an
    alignment template, a grid's variant, a registered name); the command line prints it as it
    is. Any other ``KeyError`` reaching it is a defect's, shown with its traceback (a user test:
    one from deep in PyTorch read ``facemtl: error: momentum``)."""

    def __str__(self) -> str:  # KeyError's own wraps the sentence in quotes (repr)
        return str(self.args[0]) if self.args else ""


class UnknownName(NameNotFound):
    """A name no registry entry and no plugin provides (its one sentence is ``args[0]``)."""

    def __init__(self, kind: str, name: str, choices: list[str]) -> None:
        import difflib

        close = difflib.get_close_matches(name, choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        super().__init__(f"unknown {kind} {name!r}{hint}; choose one of: {', '.join(choices)} (one of your own: "
                         "import the package that registers it, or name its module in FACEMTL_PLUGINS)")
        self.kind, self.name = kind, name


class Registry(Generic[T]):
    """Maps names to factories; unknown names raise a one-sentence ``KeyError``."""

    def __init__(self, kind: str, on_register: Callable[[str, Callable[..., T]], None] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}
        self._adopted: set[str] = set()  # names registered from a plugin's entry point (not by its module)
        #: ``on_register(name, factory)``: checks (``ValueError``) or completes a factory as it is
        #: registered (task types take their registered name as their ``kind``)
        self._on_register = on_register

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            old = self._items.get(name)
            if old is not None and not _same_definition(old, fn):
                raise ValueError(f"{self.kind} {name!r} is already registered (by {_where(old)[0]})")
            if self._on_register is not None:
                self._on_register(name, fn)
            self._items[name] = fn
            return fn

        return deco

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``; a missing name is first looked for in the plugins
        (:func:`facemtl.plugins.look_for`: its own entry point, then the whole-module plugins),
        then is an :class:`UnknownName` naming the choices, or a ``PluginError`` naming a declared
        plugin that failed to import."""
        found = self.find(name)
        if found is not None:
            return found
        from .plugins import PluginError, declared_names, failures

        if failures():  # the plugin that would provide it may be the one that failed
            raise PluginError(f"{'; '.join(failures())} (no {self.kind} {name!r} is registered: it may be that "
                              f"plugin's; registered: {', '.join(sorted({*self._items, *declared_names(self.kind)}))})")
        raise UnknownName(self.kind, name, sorted({*self._items, *declared_names(self.kind)}))

    def find(self, name: str) -> Callable[..., T] | None:
        """The factory registered as ``name``, looked for in the plugins when missing
        (:func:`facemtl.plugins.look_for`: its own entry point, then the whole-module plugins);
        ``None`` when none provides it. A ``PluginError`` for an entry point of that name that
        fails to load."""
        if name not in self._items:
            from .plugins import look_for

            look_for(self.kind, name, lambda: name in self._items, lambda obj: self._adopt(name, obj))
        return self._items.get(name)

    def _adopt(self, name: str, obj: Any) -> None:
        """Register a plugin entry point's ``obj`` as ``name``; ``ValueError`` where its module registered
        it under another name, which its model files and recipes would then name and no entry point
        provides in a fresh process (a contributor's test: models no process could read back)."""
        other = sorted(n for n, f in self._items.items() if f is obj and n not in self._adopted)
        if other:  # (one object under two entry points' names is fine)
            raise ValueError(f"{getattr(obj, '__qualname__', obj)!s} is registered as {other[0]!r} by its module: name "
                             f"the entry point {other[0]!r}, or leave the registration out of the module")
        self.register(name)(obj)
        self._adopted.add(name)

    def build(self, name: str, *args: Any, **kwargs: Any) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


def _same_definition(old: Any, new: Any) -> bool:
    """Whether ``new`` is ``old`` defined again (a module reloaded, a notebook cell run twice),
    which then replaces it: the same module and qualified name, a named one (two lambdas are not)."""
    module, name = _where(new)
    return _where(old) == (module, name) and module is not None and name is not None and "<lambda>" not in name


def _where(fn: Any) -> tuple[str | None, str | None]:
    """Module and qualified name of a registered factory (a class or a function)."""
    return getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
