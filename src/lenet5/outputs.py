"""What a network's outputs mean, in plain NumPy, whichever engine computed them.

Every network returns (N, K) outputs whose argmax is the prediction: logits for the modern
network, the negated RBF penalties -y_i for the 1998 one. Here they become class
log-probabilities under the network's loss (``arch.LOSSES``), loss values, and the
probabilities users see. The NumPy engine builds its losses' gradients on these functions.
"""

from __future__ import annotations

import numpy as np

from .arch import MAP_J


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)  # (N, K), stable
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def map_log_probs_with_rubbish(scores: np.ndarray) -> np.ndarray:
    """The 1998 MAP criterion's posteriors (LeCun et al. 1998, eq. 9), as logs, (N, 1 + K):
    the "rubbish" class first, whose score is fixed at -j (``arch.MAP_J``), then each class,
    log of e^{s_i} / (e^-j + sum_k e^{s_k}) for scores s = -y."""
    rubbish = np.full((len(scores), 1), -MAP_J, dtype=scores.dtype)  # (N, 1)
    return log_softmax(np.concatenate([rubbish, scores], axis=1))


def map_log_probs(scores: np.ndarray) -> np.ndarray:
    """The classes' log-posteriors under MAP, (N, K): what the rubbish class leaves them."""
    return map_log_probs_with_rubbish(scores)[:, 1:]


CLASS_LOG_PROBS = {"cross_entropy": log_softmax, "map": map_log_probs}
HIGHEST_PROBABILITY = {"cross_entropy": 1.0, "map": float(1 / (1 + np.exp(-MAP_J)))}
"""The most probability one class can have under each loss (as CLASS_LOG_PROBS gives it):
under MAP, rubbish's e^-j takes its share even from a perfect match (s_i = 0)."""


def mean_loss(outputs: np.ndarray, labels: np.ndarray, loss: str) -> float:
    """The mean over images of -log p(label) under ``loss``, in the outputs' dtype."""
    log_p = CLASS_LOG_PROBS[loss](outputs)  # (N, K)
    return float(-log_p[np.arange(len(labels)), labels].mean())


def probabilities(outputs: np.ndarray) -> np.ndarray:
    """(N, K) class probabilities shown to users: softmax of the outputs, in float64 (for
    the 1998 network, exp(-y_i) / sum_k exp(-y_k))."""
    return np.exp(log_softmax(outputs.astype(np.float64)))
