"""Losses on a batch of network outputs: each returns the mean loss and its gradient; the
``*_curvature`` functions give the per-image second derivatives SDLM starts from."""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)  # (N, K), stable
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) and d(mean loss)/d(logits). A non-digit (label
    -1, `data.nondigits.NONDIGIT`) has the uniform distribution as its target (outlier
    exposure): its loss is the mean of -log p_k, its gradient p - 1/K."""
    n, classes = logits.shape
    log_probs = log_softmax(logits)  # (N, K)
    grad = np.exp(log_probs)
    rows = np.flatnonzero(labels >= 0)
    loss = -log_probs[rows, labels[rows]].sum()
    grad[rows, labels[rows]] -= 1
    if rows.size < n:
        others = labels < 0
        loss -= log_probs[others].mean(axis=1).sum()
        grad[others] -= 1.0 / classes
    grad /= n
    return float(loss / n), grad


def softmax_curvature(logits: np.ndarray) -> np.ndarray:
    """Per-image Gauss-Newton diagonal of the cross-entropy w.r.t. the logits: p (1 - p).
    Like every curvature here, it does not depend on the labels."""
    p = np.exp(log_softmax(logits))  # (N, K)
    return p * (1 - p)


# --- the 1998 MAP criterion -----------------------------------------------------------------

# The paper (section II-C, eq. 9) only says j is a positive constant. Read as a class: the
# e^-j term is a "rubbish" class whose penalty is fixed at j. Since every y_i >= 0, a small j
# (e^-j near the largest possible e^-y_i, 1) lets the competitive term push up only penalties
# that are already nearly as small as j -- outputs close to a wrong centre -- while the first
# term, the squared distance to the correct centre, does most of the work, as in the paper's
# MSE criterion (eq. 8) that MAP extends. 0.1 is also the value reimplementations commonly use.
MAP_J = 0.1


def map_log_probs_with_rubbish(scores: np.ndarray) -> np.ndarray:
    """(N, 1 + K): log of e^-j / Z (the rubbish class, column 0), then of e^{s_i} / Z for
    each class, Z = e^-j + sum_k e^{s_k}; s = -y."""
    rubbish = np.full((len(scores), 1), -MAP_J, dtype=scores.dtype)  # (N, 1)
    return log_softmax(np.concatenate([rubbish, scores], axis=1))


def _map_log_probs(scores: np.ndarray) -> np.ndarray:
    """log of e^{s_i} / (e^-j + sum_k e^{s_k}) for each class, (N, K); s = -y."""
    return map_log_probs_with_rubbish(scores)[:, 1:]


def map_loss(scores: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean MAP loss E = y_D + log(e^-j + sum_i e^-y_i) and dE/d(scores), for scores = -y,
    the negated RBF penalties (what ``layers.RBF`` returns). In scores it is softmax
    cross-entropy with one extra class whose score is fixed at -j: E = -log p_D with
    p_i = e^{s_i} / (e^-j + sum_k e^{s_k}), so dE/ds_i = p_i - [i = D]. A non-digit (label
    -1) has the rubbish class as its target, as the paper's string readers trained on
    non-characters: E = -log p_rubbish, dE/ds_i = p_i."""
    n = len(scores)
    log_p = map_log_probs_with_rubbish(scores)  # (N, 1 + K)
    columns = labels + 1  # -1 (non-digit) -> 0, the rubbish class
    loss = -log_p[np.arange(n), columns].mean()
    grad = np.exp(log_p)
    grad[np.arange(n), columns] -= 1
    grad = grad[:, 1:] / n  # the rubbish score is a constant
    return float(loss), grad


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
    p = np.exp(_map_log_probs(scores))  # (N, K)
    mean_d = np.einsum("nk,nkf->nf", p, diff)  # (N, F)
    mean_d2 = np.einsum("nk,nkf->nf", p, diff * diff)
    return 2 * (1 - p.sum(axis=1, keepdims=True)) + 4 * (mean_d2 - mean_d**2)
