"""Rebuild a trained network from its checkpoint alone, for inference.

Imports the model, the tasks and the checkpoint reader only: never the trainer, the
loss weightings, the data readers or augmentation (a test checks ``sys.modules``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from ..checkpoint import load_checkpoint
from ..config import DATA_PATHS, Config, ConfigError, config_from_dict
from ..tasks import Task, build_task
from .net import MultiTaskNet


def weight_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str | None:
    """What differs between the weights a model ``expected`` and those ``found`` in a file, in a
    few words (missing and unexpected names, shape mismatches, a few of each), or ``None``."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} {tuple(found[k].shape)} in the file, {tuple(expected[k].shape)} for the config"
              for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]

    def few(items: list[str]) -> str:
        return ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} weight(s) missing ({few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({few(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} of another shape ({few(shapes)})")
    return "; ".join(parts) or None


def load_weights(model: torch.nn.Module, weights: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(weights)``, or a one-sentence ``ValueError`` saying which parts of
    the file ``path`` do not fit the model its own config describes."""
    problem = weight_mismatch(model.state_dict(), weights)
    if problem:
        raise ValueError(f"model file {path} does not match its config: {problem}")
    model.load_state_dict(weights)


def data_anchor(checkpoint: str | Path) -> Path:
    """The folder a relative data folder recorded in ``checkpoint`` is relative to: the checkpoint's
    own, or the current folder for a model shipped in the package (:func:`_anchor_data_paths`)."""
    base = Path(checkpoint).resolve().parent
    return Path.cwd() if base == Path(__file__).resolve().parents[1] / "weights" else base


def _anchor_data_paths(cfg: Config, checkpoint: str | Path) -> None:
    """Make a relative ``data.root`` (and ``data.targets``, ``data.cache_dir``) written in ``checkpoint`` absolute,
    against the checkpoint's folder, so that every command reading a checkpoint (``evaluate``,
    ``export``, ``fusion``, ``gradcam``) finds the same folder wherever it is run from.

    ``facemtl train`` writes absolute folders; a relative one comes from a checkpoint written
    before that, or edited by hand, and the run folder and its data moved together keep their
    relation. (An exported file's relative folder resolves against the current folder instead:
    the shipped model records ``../shared/data/utkface``, beside the repository it runs from; so
    does a checkpoint shipped in the package's ``weights`` folder, the shipped ``.pt``, which
    records the same text: against its own folder it named ``src/facemtl/shared/...``, and
    ``evaluate``, ``export`` and ``benchmark`` found no data in a fresh checkout, a user test.)
    """
    base = data_anchor(checkpoint)
    for key in DATA_PATHS:
        value = getattr(cfg.data, key)
        if value and not Path(value).expanduser().is_absolute():
            setattr(cfg.data, key, str((base / Path(value).expanduser()).resolve()))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[MultiTaskNet, list[Task], Config, dict[str, Any]]:
    """``(model, tasks, config, state)`` from a checkpoint, in eval mode, in float32, with no network access."""
    state = load_checkpoint(path)
    lacking = [k for k in ("config", "tasks", "model") if k not in state]
    if lacking:
        raise ValueError(f"model file {path} lacks its {' and '.join(repr(k) for k in lacking)}, so it cannot be rebuilt")
    try:
        cfg = config_from_dict(state["config"])
        tasks = [build_task(t) for t in state["tasks"]]
    except (ConfigError, ValueError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise ValueError(f"model file {path} holds a config this facemtl cannot use: {msg}") from None
    _anchor_data_paths(cfg, path)
    model = MultiTaskNet.from_config(cfg.model, tasks, pretrained=False)
    for name in state.get("frozen", []):
        model.freeze(name)
    load_weights(model, state["model"], path)
    model.to(device).float().eval()
    return model, tasks, cfg, state
