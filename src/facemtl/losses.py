"""Loss functions as pure functions (shapes in each docstring).

Labels arrive as float tensors where ``NaN`` marks a missing label; every loss
here takes only the rows that carry a label (see :func:`labelled`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def labelled(y: torch.Tensor) -> torch.Tensor:
    """Boolean mask ``(N,)`` of rows whose label is present: not NaN (for a vector label
    ``(N, D)``, no NaN in the row)."""
    return ~torch.isnan(y) if y.dim() == 1 else ~torch.isnan(y).any(1)


def zero_loss(logits: torch.Tensor) -> torch.Tensor:
    """A zero that stays attached to the graph (for a batch with no labels for a task)."""
    return logits.sum() * 0.0


def levels_from_ranks(ranks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Extended binary targets for K-1 subproblems "rank > k" (paper eq. 5).

    ``ranks``: ``(N,)`` integer ranks in ``0..K-1``. Returns ``(N, K-1)`` floats
    with ``levels[i, k] = 1`` when ``ranks[i] > k``. Rank 2 of K=5 -> ``[1, 1, 0, 0]``.
    """
    k = torch.arange(num_classes - 1, device=ranks.device)
    return (ranks.long().unsqueeze(1) > k).float()


def ordinal_bce_loss(
    logits: torch.Tensor, ranks: torch.Tensor, importance: torch.Tensor | None = None, reduction: str = "sum"
) -> torch.Tensor:
    """Binary cross-entropy over the K-1 ordinal subproblems (paper eq. 7; CORAL's loss).

    ``logits``: ``(N, K-1)``; ``ranks``: ``(N,)`` in ``0..K-1``.
    ``L = -1/N sum_i sum_k lambda_k [y_ik log s(z_ik) + (1 - y_ik) log(1 - s(z_ik))]``
    with ``y_ik = [rank_i > k]``. ``reduction="sum"`` sums over the K-1 tasks (as
    ``coral_pytorch.losses.coral_loss`` does); ``"mean"`` divides that by K-1.
    The same loss serves independent K-1 heads (the paper) and CORAL's shared-weight head.
    """
    if logits.ndim != 2 or logits.shape[0] != ranks.shape[0]:
        raise ValueError(f"logits must be (N, K-1) and ranks (N,), got {tuple(logits.shape)} and {tuple(ranks.shape)}")
    levels = levels_from_ranks(ranks, logits.shape[1] + 1)
    term = F.logsigmoid(logits) * levels + (F.logsigmoid(logits) - logits) * (1 - levels)
    if importance is not None:
        term = term * importance
    per_row = -term.sum(1)
    if reduction == "mean":
        per_row = per_row / logits.shape[1]
    return per_row.mean()


def corn_loss(logits: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """CORN conditional-training loss (Shi, Cao and Raschka 2023).

    ``logits``: ``(N, K-1)``; ``ranks``: ``(N,)`` in ``0..K-1``. Subproblem k is
    trained only on rows with ``rank > k - 1`` (the conditional set), target
    ``rank > k``; the summed binary cross-entropy is divided by the number of
    (row, subproblem) pairs used, as in ``coral_pytorch.losses.corn_loss``.
    """
    k = torch.arange(logits.shape[1], device=logits.device)
    r = ranks.long().unsqueeze(1)
    use = (r > k - 1).float()
    target = (r > k).float()
    term = F.logsigmoid(logits) * target + (F.logsigmoid(logits) - logits) * (1 - target)
    n = use.sum()
    if n == 0:
        return zero_loss(logits)
    return -(term * use).sum() / n


def mean_variance_loss(p: torch.Tensor, ranks: torch.Tensor, lambda_mean: float = 0.2,
                       lambda_var: float = 0.05) -> torch.Tensor:
    """Mean-variance loss (Pan, Han, Shan and Chen, CVPR 2018, eq. 3-5) on a distribution over ranks.

    ``p``: ``(N, K)`` probabilities of ranks ``0..K-1``; ``ranks``: ``(N,)``. With the
    distribution's mean ``m_i = sum_k k p_ik`` and variance ``v_i = sum_k p_ik (k - m_i)^2``:
    ``L = lambda_mean * mean_i (m_i - y_i)^2 / 2 + lambda_var * mean_i v_i`` (in ranks, i.e. years
    for age): it pulls the predicted distribution's centre onto the label and sharpens it.
    """
    k = torch.arange(p.shape[1], device=p.device, dtype=p.dtype)
    m = (p * k).sum(1)
    v = (p * (k - m.unsqueeze(1)) ** 2).sum(1)
    return lambda_mean * ((m - ranks.to(p.dtype)) ** 2).mean() / 2 + lambda_var * v.mean()
