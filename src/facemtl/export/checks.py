"""Every export checks itself: the exported file, run by its own runtime, against PyTorch.

On the same real faces: the largest difference of any raw output, and after the tasks
decode, the share of faces whose answer changed as the outputs write it (and, for numeric
tasks, by how much on average). For reduced precision (INT8, FP16 weights or arithmetic)
also each task's headline metric on labelled validation faces, both ways, and what
quantization lost.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .formats import MAX_ACCURACY_DROP, MAX_ERROR_RISE

#: FP32 exports must match PyTorch's raw outputs (logits) this closely on every face.
FP32_TOLERANCE = 1e-3


def run_all(runtime: Any, images: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """``{task: (N, D)}`` raw outputs of ``runtime`` on ``uint8 (N, 3, S, S)`` images, in batches."""
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(images), batch_size):
        for k, v in runtime.run(np.ascontiguousarray(images[i : i + batch_size])).items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def written_answers(task: Any, raw: np.ndarray) -> list[Any]:
    """Each face's answer to ``task`` as every output writes it (``TaskAnswer.fields``: a class
    name, or a number at the task's decimals), from raw outputs ``(N, D)``; the decoded
    prediction ``(N,)`` for a task that gives no answers at inference."""
    if not task.inference:
        return list(task.predict(raw))
    return [a.fields(task.name)[task.name] for a in task.answers(raw)]


def compare_outputs(tasks: Sequence[Any], ref: dict[str, np.ndarray], new: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per task: ``max_abs_diff`` of raw outputs, ``changed`` (share of faces whose answer, as
    written (:func:`written_answers`), differs: a difference of 1e-7 in a regression output
    rounded away is no change) and, for numeric answers, ``mean_change`` in label units."""
    out: dict[str, Any] = {}
    for t in tasks:
        a, b = t.predict(ref[t.name]), t.predict(new[t.name])
        changed = [x != y for x, y in zip(written_answers(t, ref[t.name]), written_answers(t, new[t.name]))]
        row = {"max_abs_diff": float(np.abs(ref[t.name] - new[t.name]).max()), "changed": float(np.mean(changed))}
        if t.class_names() is None:
            row["mean_change"] = float(np.mean(np.abs(a - b)))
        out[t.name] = row
    return out


def accuracy_loss(tasks: Sequence[Any], ref: dict[str, np.ndarray], new: dict[str, np.ndarray],
                  labels: np.ndarray) -> dict[str, Any]:
    """Per task, its headline metric with PyTorch and with the export on labelled faces,
    ``lost`` (positive = worse: points of accuracy, or the relative rise of an error) and
    whether that stays within :data:`MAX_ACCURACY_DROP` / :data:`MAX_ERROR_RISE`."""
    out: dict[str, Any] = {}
    for j, t in enumerate(tasks):
        col = t.headline
        m_ref = t.metrics(t.predict(ref[t.name]), labels[:, j])
        m_new = t.metrics(t.predict(new[t.name]), labels[:, j])
        if not m_ref.get("n"):
            continue
        a, b = float(m_ref[col.key]), float(m_new[col.key])
        if col.lower_is_better:
            lost, limit, unit = (b - a) / a if a else b - a, MAX_ERROR_RISE, "relative"
        else:
            lost, limit, unit = a - b, MAX_ACCURACY_DROP, "points" if col.percent else "absolute"
        # A loss of exactly the limit passes ("more than" the limit fails); the margin absorbs
        # float rounding, e.g. 0.86 - 0.855 = 0.0050000000000000044 for five faces in 1,000.
        out[t.name] = {"metric": col.key, "pytorch": a, "exported": b, "lost": lost, "limit": limit,
                       "unit": unit, "ok": lost <= limit + 1e-9, "faces": int(m_ref["n"])}
        if unit == "points" and 1 / m_ref["n"] > limit:  # one face more or less is past the limit
            out[t.name]["coarse"] = True
        # one face one rank (year) further off: past the limit too (a user test: 11 faces, MAE 2.909 -> 3.000)
        elif unit == "relative" and t.error_step and a and t.error_step / (m_ref["n"] * a) > limit:
            out[t.name]["coarse"] = True
            out[t.name]["step"] = t.error_step
    return out


def coarse_note(row: dict[str, Any]) -> str:
    """What a check on too few faces cannot tell: one face more or less right moves an accuracy
    by more than the limit (a user test: 88 faces, 1.14 points a face against 0.5), so a pass
    or a failure there is one face's luck."""
    if not row.get("coarse"):
        return ""
    more = "too few labelled faces to tell; more with --check-faces, where the validation split has them"
    if row["unit"] == "relative":
        share = row.get("step", 1.0) / (row["faces"] * row["pytorch"])
        return (f" (one face one unit further off is {100 * share:.1f}% of the error, more than the "
                f"{100 * row['limit']:.0f}% limit: {more})")
    return f" (one face is {100 / row['faces']:.2f} points, more than the {100 * row['limit']:.1f}-point limit: {more})"


def describe_loss(row: dict[str, Any]) -> str:
    if row["unit"] == "relative":
        return f"{row['metric']} {row['pytorch']:.3f} -> {row['exported']:.3f} ({100 * row['lost']:+.1f}%)"
    moved = round(-100 * row["lost"], 2) + 0.0  # (+ 0.0: a loss under 0.005 points reads +0.00, not -0.00)
    return f"{row['metric']} {100 * row['pytorch']:.2f}% -> {100 * row['exported']:.2f}% ({moved:+.2f} points)"
