"""The report's figures (matplotlib, Agg backend), each returned as PNG bytes.

Paper Fig. 3 (task weights beta_t per epoch), Fig. 4 (cumulative score CS(k)),
Fig. 6 (intersectional bias), plus loss curves and confusion matrices.
"""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _grid(n: int, width: float = 4.0, height: float = 3.0, cols: int = 3):
    plt = _plt()
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def normalised_weights(record: dict[str, Any]) -> dict[str, float]:
    """beta_t of one epoch record: ``weights_normalised`` when logged, else the weights scaled to sum 1."""
    if record.get("weights_normalised"):
        return {k: float(v) for k, v in record["weights_normalised"].items()}
    w = {k: float(v) for k, v in (record.get("weights") or {}).items()}
    total = sum(w.values())
    return {k: v / total for k, v in w.items()} if total > 0 else {}


def weight_curves(series: Sequence[tuple[str, list[dict[str, Any]]]]) -> bytes:
    """One panel per variant: normalised task weight beta_t (paper eq. 16) against epoch."""
    fig, axes = _grid(len(series))
    for ax, (label, records) in zip(axes, series):
        epochs = [r["epoch"] for r in records]
        tasks = sorted({t for r in records for t in normalised_weights(r)})
        for t in tasks:
            ax.plot(epochs, [normalised_weights(r).get(t, np.nan) for r in records], marker="o", label=t)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("beta_t")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
    return _png(fig)


def loss_curves(records: list[dict[str, Any]], tasks: Sequence[str]) -> bytes:
    """One panel per task: mean training loss and validation loss per epoch."""
    fig, axes = _grid(len(tasks))
    epochs = [r["epoch"] for r in records]
    for ax, t in zip(axes, tasks):
        ax.plot(epochs, [r.get("train", {}).get("loss", {}).get(t, np.nan) for r in records], marker="o", label="train")
        ax.plot(epochs, [r.get("val", {}).get(t, {}).get("loss", np.nan) for r in records], marker="s", label="validation")
        ax.set_title(f"{t} loss", fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    return _png(fig)


def cs_curves(curves: dict[str, dict[float, float]], task: str, unit: str = "") -> bytes:
    """Cumulative score CS(k) (paper eq. 17): share of test faces with |error| <= k (in ``unit``, years for age)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, cs in curves.items():
        ks = sorted(cs)
        ax.plot(ks, [100 * cs[k] for k in ks], marker=".", label=label)
    ax.set_xlabel(f"error level k ({unit})" if unit else "error level k")
    ax.set_ylabel(f"CS(k) of {task} (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def confusion_matrices(mats: Sequence[tuple[str, np.ndarray, Sequence[str]]]) -> bytes:
    """Row-normalised confusion matrices (rows: true class, columns: predicted), counts written in."""
    fig, axes = _grid(len(mats), 4.2, 3.8)
    for ax, (title, m, names) in zip(axes, mats):
        m = np.asarray(m, float)
        share = m / np.maximum(m.sum(1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=9)
    return _png(fig)


def bias_heatmaps(rows: list[dict[str, Any]], keys: Sequence[tuple[str, str]], row_col: str,
                  col_cols: Sequence[str], order: dict[str, Sequence[str]] | None = None,
                  scale_min_count: int = 30) -> bytes:
    """Per task metric, a heatmap of cells: ``row_col`` down, the ``col_cols`` combination across.

    ``keys``: ``(metric key, title)`` pairs, e.g. ``("age_mae", "age MAE (years)")``.
    Each cell shows the value and its count n. ``order``: per column, the order of its groups
    (:func:`facemtl.subgroups.group_order`). The colour scale spans the cells of
    ``scale_min_count`` faces or more where two have that many (a cell of one face, 56 years
    off, had set the age scale, and every real cell read alike); a smaller cell beyond it takes
    the end colour, its number written as it is.
    """
    from ..subgroups import group_order

    keyed = {c: group_order((order or {}).get(c)) for c in [row_col, *col_cols]}
    row_vals = sorted({r[row_col] for r in rows}, key=keyed[row_col])
    col_vals = sorted({tuple(r[c] for c in col_cols) for r in rows},
                      key=lambda combo: tuple(keyed[c](v) for c, v in zip(col_cols, combo)))
    fig, axes = _grid(len(keys), max(5.0, 0.55 * len(col_vals) + 1.5), 0.6 * len(row_vals) + 2.0, cols=1)
    for ax, (key, title) in zip(axes, keys):
        grid = np.full((len(row_vals), len(col_vals)), np.nan)
        counts = np.zeros_like(grid)
        for r in rows:
            i, j = row_vals.index(r[row_col]), col_vals.index(tuple(r[c] for c in col_cols))
            grid[i, j], counts[i, j] = r[key], r.get(f"{key}_n", r["n"])  # the faces it is computed on
        pct = key.endswith("accuracy")
        shown = 100 * grid if pct else grid
        cmap = "RdYlGn" if pct else "RdYlGn_r"
        big = (counts >= scale_min_count) & ~np.isnan(grid)
        span = {"vmin": float(shown[big].min()), "vmax": float(shown[big].max())} if big.sum() >= 2 else {}
        im = ax.imshow(shown, cmap=cmap, aspect="auto", **span)
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{shown[i, j]:.0f}\nn={int(counts[i, j])}" if pct else
                            f"{shown[i, j]:.1f}\nn={int(counts[i, j])}", ha="center", va="center", fontsize=6)
        ax.set_xticks(range(len(col_vals)), [" ".join(map(str, c)) for c in col_vals], rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(row_vals)), row_vals, fontsize=7)
        ax.set_ylabel(row_col)
        ax.set_title(title + (f" (colours: cells of {scale_min_count}+ faces)" if span else ""), fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.02)
    return _png(fig)


def gradcam_grid(panels: Sequence[tuple[np.ndarray, np.ndarray, str]], cols: int = 4) -> bytes:
    """Faces with their Grad-CAM map overlaid: ``(image (H, W, 3) in [0, 1], map (H, W) in [0, 1], title)``."""
    fig, axes = _grid(len(panels), 2.4, 2.6, cols=cols)
    for ax, (img, cam, title) in zip(axes, panels):
        ax.imshow(img)
        if np.any(cam > 0):
            ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        else:  # no region raised the score (every gradient-weighted activation was cut by the ReLU):
            title += "\n(empty map: no region raises it)"  # an even blue tint would read as "nowhere" too
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    return _png(fig)
