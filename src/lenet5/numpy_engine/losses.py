"""Losses on a batch of network outputs: each returns the mean loss and its gradient; the
``*_curvature`` functions give the per-image second derivatives SDLM starts from. The class
log-probabilities they differentiate come from ``lenet5.outputs``."""

from __future__ import annotations

import numpy as np

from ..arch import NONDIGIT
from ..outputs import log_softmax, map_log_probs, map_log_probs_with_rubbish


def _cross_entropy(log_p: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean of -sum_k target_k log p_k over the batch and its gradient w.r.t. the scores whose
    softmax p is, given log p (N, C) and the target distributions (N, C): p - target, over N."""
    n = len(log_p)
    loss = -(targets * log_p).sum(axis=1).mean()
    return float(loss), (np.exp(log_p) - targets) / n


def _one_hot(labels: np.ndarray, classes: int, dtype: np.dtype) -> np.ndarray:
    """(N, classes) targets: one-hot rows; a NONDIGIT row (label -1) is all zeros."""
    targets = np.zeros((len(labels), classes), dtype=dtype)
    rows = np.flatnonzero(labels != NONDIGIT)
    targets[rows, labels[rows]] = 1
    return targets


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) and d(mean loss)/d(logits). A non-digit (label
    ``arch.NONDIGIT``) has the uniform distribution as its target (outlier exposure)."""
    targets = _one_hot(labels, logits.shape[1], logits.dtype)  # (N, K)
    targets[labels == NONDIGIT] = 1.0 / logits.shape[1]
    return _cross_entropy(log_softmax(logits), targets)


def softmax_curvature(logits: np.ndarray) -> np.ndarray:
    """Per-image Gauss-Newton diagonal of the cross-entropy w.r.t. the logits: p (1 - p).
    Like every curvature here, it does not depend on the labels."""
    p = np.exp(log_softmax(logits))  # (N, K)
    return p * (1 - p)


# --- the 1998 MAP criterion -----------------------------------------------------------------

def map_loss(scores: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean MAP loss E = y_D + log(e^-j + sum_i e^-y_i) and dE/d(scores), for scores = -y,
    the negated RBF penalties (what ``layers.RBF`` returns). In scores it is softmax
    cross-entropy with one extra "rubbish" class whose score is fixed at -j:
    E = -log p_D with p_i = e^{s_i} / (e^-j + sum_k e^{s_k}) (``outputs.map_log_probs``). A
    non-digit (label ``arch.NONDIGIT``) has the rubbish class as its target, as the paper's
    string readers were trained on non-characters: E = -log p_rubbish."""
    targets = _one_hot(labels + 1, scores.shape[1] + 1, scores.dtype)  # rubbish: column 0
    loss, grad = _cross_entropy(map_log_probs_with_rubbish(scores), targets)
    return loss, grad[:, 1:]  # the rubbish score is a constant


def map_curvature(features: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Per-image diagonal of the Hessian of the MAP loss w.r.t. F6's outputs x (N, F), through
    the fixed RBF (y_i = |x - c_i|^2), for SDLM's second-derivative pass.

    The RBF has no parameters, so the Gauss-Newton split is made at x: the trainable network
    up to F6, then the fixed function E(x). Its exact diagonal, with d_ij = x_j - c_ij, p as
    in ``map_loss`` and P = sum_i p_i < 1, is
        d2E/dx_j^2 = 2 (1 - P) + 4 (sum_i p_i d_ij^2 - (sum_i p_i d_ij)^2),
    and both terms are >= 0 (Cauchy-Schwarz: (sum p d)^2 <= P sum p d^2), so it is a valid
    curvature. Early in training P ~ 0 and it is 2, the curvature of the first term y_D alone
    -- the paper's squared-error case.
    """
    diff = features[:, None, :] - centres  # (N, K, F)
    scores = -np.einsum("nkf,nkf->nk", diff, diff)  # (N, K)
    p = np.exp(map_log_probs(scores))  # (N, K)
    mean_d = np.einsum("nk,nkf->nf", p, diff)  # (N, F)
    mean_d2 = np.einsum("nk,nkf->nf", p, diff * diff)
    return 2 * (1 - p.sum(axis=1, keepdims=True)) + 4 * (mean_d2 - mean_d**2)


LOSSES = {"cross_entropy": softmax_cross_entropy, "map": map_loss}  # keys: arch.LOSSES
