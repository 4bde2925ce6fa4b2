"""``facemtl plugins``: what each registry holds, built in and from plugins, and whether every
declared plugin loads (see :mod:`facemtl.plugins`): the one place to see why a name of yours is
not found, without running the command that needs it."""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

#: Each registry's kind (:data:`facemtl.plugins.GROUPS`) and where it lives: ``(module, name)``.
#: Backbones and weightings live beside torch (the train extra); the plain install names them so.
REGISTRIES = {"task type": ("facemtl.tasks", "TASK_TYPES"), "backbone": ("facemtl.model", "BACKBONES"),
              "loss weighting": ("facemtl.weighting", "WEIGHTINGS"), "face detector": ("facemtl.faces", "DETECTORS"),
              "sink": ("facemtl.sinks", "SINKS"), "video source": ("facemtl.video", "SOURCES")}


def plugins_report() -> dict[str, Any]:
    """Per registry kind: ``group`` (its entry-point group), ``built_in`` names, and ``declared``
    entry points, each loaded (``{"name", "value", "package", "ok", "error"}``; ``ok`` is ``None``
    where the registry needs what this install lacks: a backbone without torch); then ``modules``,
    the whole-module plugins (``FACEMTL_PLUGINS``, the ``facemtl.plugins`` group) and whether each
    loaded. Built-in names are read before any plugin is loaded."""
    from . import plugins
    from .inference.runtimes import RUNTIMES, known_runtime

    registries: dict[str, Any] = {}
    for kind, (module, attr) in REGISTRIES.items():
        try:
            registries[kind] = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:  # (torch, on the plain install)
            from .cli import EXTRAS

            top = (exc.name or "").split(".")[0]
            registries[kind] = f"needs {top}: pip install 'facemtl[{EXTRAS.get(top, 'train')}]'"
    out: dict[str, Any] = {}
    registered: dict[str, set[str]] = {}  # per kind, before any plugin loads: a declared one of these never loads
    for kind, group in plugins.GROUPS.items():
        reg = registries.get(kind)
        built_in = list(RUNTIMES) if kind == "runtime" else reg.names() if not isinstance(reg, str) else []
        registered[kind] = set(built_in)
        if kind == "video source":  # (the built-in schemes are read without the registry)
            from .video.sources import URL_SCHEMES

            built_in = [*built_in, *URL_SCHEMES, "file"]
        out[kind] = {"group": group, "built_in": built_in, "declared": []}
        if isinstance(reg, str):
            out[kind]["unavailable"] = reg
    modules = plugins.declared_modules()
    plugins.load_plugins()
    failed = plugins.failed_modules()
    for kind, group in plugins.GROUPS.items():
        reg = registries.get(kind)
        for ep in plugins.declared_entry_points(kind):
            row: dict[str, Any] = {"name": ep.name, "value": ep.value, "package": plugins.package_of(ep), "ok": True}
            if isinstance(reg, str):  # not tried: its registry needs what this install lacks (not counted as failing)
                row.update(ok=None, error=reg)
                out[kind]["declared"].append(row)
                continue
            if ep.name in registered[kind]:  # (a review: said "ok", never imported)
                row.update(ok=False, error=f"the built-in {kind} {ep.name!r} is taken for that name, so this one "
                                           "never loads: name it otherwise")
                out[kind]["declared"].append(row)
                continue
            try:
                known_runtime(ep.name) if kind == "runtime" else reg.get(ep.name)
            except (ValueError, KeyError) as exc:
                row.update(ok=False, error=str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc))
            out[kind]["declared"].append(row)
    return {"registries": out,
            "modules": [{"module": m, "declared_by": how, "ok": m not in failed, **({"error": failed[m]} if m in failed
                                                                                    else {})} for m, how in modules]}


def plugins_run(a: argparse.Namespace) -> int:
    report = plugins_report()
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print(_text(report), end="")
    broken = [r for k in report["registries"].values() for r in k["declared"] if r["ok"] is False] + \
        [m for m in report["modules"] if not m["ok"]]
    return 1 if broken else 0


def _text(report: dict[str, Any]) -> str:
    lines = []
    for kind, r in report["registries"].items():
        lines.append(f"{kind} ({r['group']}): " + (r.get("unavailable") or ", ".join(r["built_in"]) or "none built in"))
        for d in r["declared"]:
            state = "ok" if d["ok"] else f"not tried: {d['error']}" if d["ok"] is None else f"FAILS: {d['error']}"
            lines.append(f"  {d['name']} = {d['value']!r} ({d['package']}): {state}")
    if report["modules"]:
        lines.append("whole-module plugins:")
        for m in report["modules"]:
            lines.append(f"  {m['module']} ({m['declared_by']}): " + ("ok" if m["ok"] else f"FAILS: {m['error']}"))
    else:
        lines.append("whole-module plugins: none (FACEMTL_PLUGINS is empty, no package declares facemtl.plugins)")
    return "\n".join(lines) + "\n"


def plugins_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="the report as JSON")
