"""Multinomial logistic regression on fixed features (a linear probe), fitted with L-BFGS.

Used where a small classifier is fitted on a teacher's feature vectors: the accurate
variant's fusion heads (:mod:`facemtl.inference.fusion`) and the teacher head that gives
soft targets for distillation (:mod:`facemtl.tasks.soft`). Written here rather than taken
from scikit-learn because torch is already present wherever it runs and scikit-learn is
not a dependency of the plain install; the problem is convex, so L-BFGS from zero finds
the same optimum any solver would.
"""

from __future__ import annotations

import numpy as np


def fit_logistic(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float = 1e-3,
                 max_iter: int = 200, sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``W (C, D)`` and biases ``b (C,)`` minimising
    ``sum_i s_i CE(softmax(W x_i + b), y_i) / sum_i s_i + l2 * ||W||^2``.

    ``x``: ``(N, D)`` features (no NaN); ``y``: ``(N,)`` class indices in ``0..C-1``;
    ``sample_weight``: ``(N,)`` non-negative weights ``s_i`` (``None``: all 1, the plain mean;
    an integer weight is the same fit as that many copies of the row).
    Starts from zero, so the fit uses no random numbers (it leaves the global RNG as it was).
    """
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    yt = torch.from_numpy(np.asarray(y).astype(np.int64))
    if sample_weight is not None:
        st = torch.from_numpy(np.asarray(sample_weight, np.float32))
        if st.shape != yt.shape or not bool(torch.isfinite(st).all()) or bool((st < 0).any()) or float(st.sum()) <= 0:
            raise ValueError("sample_weight must hold one finite, non-negative weight per row, not all zero")
        st = st / st.sum()
    w = torch.zeros(num_classes, xt.shape[1], requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = xt @ w.T + b
        if sample_weight is None:
            ce = torch.nn.functional.cross_entropy(logits, yt)
        else:
            ce = (torch.nn.functional.cross_entropy(logits, yt, reduction="none") * st).sum()
        loss = ce + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy().copy(), b.detach().numpy().copy()


def logistic_probabilities(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Class probabilities ``(N, C)`` of features ``x (N, D)`` under weights from :func:`fit_logistic`."""
    from .tasks.base import softmax

    return softmax(np.asarray(x, np.float32) @ np.asarray(w, np.float32).T + np.asarray(b, np.float32), 1)
