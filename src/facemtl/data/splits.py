"""Seeded, stratified train / val / test splits that respect groups.

Rows are stratified on a key (for UTKFace: gender, race and age decade), so each
split keeps the label mix of the whole; rows sharing a group id (one person,
or copies of one image) always land in the same split.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def strata_key(parts: list[np.ndarray], n: int) -> np.ndarray:
    """A string key per row joining integer strata per label column (see :meth:`Task.strata`)."""
    if not parts:
        return np.zeros(n, dtype=object)
    return np.array(["|".join(p) for p in zip(*(np.asarray(x, np.int64).astype(str) for x in parts))], dtype=object)


def stratified_split(
    strata: np.ndarray, val_fraction: float, test_fraction: float, seed: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """``"train"`` / ``"val"`` / ``"test"`` per row.

    Within each stratum the units (groups, or single rows) are shuffled with
    ``seed`` and cut at the fractions; fractional remainders are carried across
    strata so the totals match the fractions closely even for tiny strata.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction and test_fraction must be in [0, 1) and sum to less than 1")
    n = len(strata)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    unit_rows: dict = defaultdict(list)
    for i, g in enumerate(groups):
        unit_rows[g].append(i)
    by_stratum: dict = defaultdict(list)
    for g, rows in unit_rows.items():
        by_stratum[strata[rows[0]]].append(g)
    rng = np.random.default_rng(seed)
    out = np.full(n, "train", dtype=object)
    carry_t = carry_v = 0.0
    for key in sorted(by_stratum, key=str):
        units = by_stratum[key]
        units = [units[i] for i in rng.permutation(len(units))]
        want_t = len(units) * test_fraction + carry_t
        want_v = len(units) * val_fraction + carry_v
        n_t, n_v = int(want_t), int(want_v)
        carry_t, carry_v = want_t - n_t, want_v - n_v
        for j, g in enumerate(units):
            part = "test" if j < n_t else "val" if j < n_t + n_v else "train"
            for r in unit_rows[g]:
                out[r] = part
    return out


def carve_validation(split: np.ndarray, strata: np.ndarray, val_fraction: float, seed: int, groups=None) -> np.ndarray:
    """Turn a share of the ``train`` rows of a predefined split into ``val`` (stratified)."""
    out = split.copy()
    train = np.flatnonzero(split == "train")
    if len(train) == 0 or val_fraction <= 0:
        return out
    sub = stratified_split(strata[train], val_fraction, 0.0, seed, None if groups is None else np.asarray(groups)[train])
    out[train[sub == "val"]] = "val"
    return out
