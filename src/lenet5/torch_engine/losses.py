"""The losses of ``arch.LOSSES`` in torch, and their curvatures for SDLM.

Each loss maps (outputs (N, K), labels (N,)) to the mean loss; autograd gives its gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..arch import MAP_J


def _with_rubbish(scores: torch.Tensor) -> torch.Tensor:
    """(N, 1 + K) log-probabilities of the rubbish class (column 0, score fixed at -j) and
    of each class, for scores s = -y (negated RBF penalties)."""
    rubbish = scores.new_full((len(scores), 1), -MAP_J)  # (N, 1)
    return F.log_softmax(torch.cat([rubbish, scores], dim=1), dim=1)


def map_log_probs(scores: torch.Tensor) -> torch.Tensor:
    """log of e^{s_i} / (e^-j + sum_k e^{s_k}), (N, K), for scores s = -y (negated RBF
    penalties): a softmax with one extra "rubbish" class whose score is fixed at -j."""
    return _with_rubbish(scores)[:, 1:]


def map_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean MAP loss of LeCun et al. 1998 (eq. 9), E = y_D + log(e^-j + sum_i e^-y_i); a
    non-digit (label -1) has the rubbish class as its target."""
    return F.nll_loss(_with_rubbish(scores), labels + 1)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy; a non-digit (label ``arch.NONDIGIT``) has the uniform
    distribution as its target (outlier exposure), as in the NumPy engine. (No test for "all
    digits" first: reading it back would make every CUDA step wait.)"""
    log_p = F.log_softmax(logits, dim=1)  # (N, K)
    picked = log_p.gather(1, labels.clamp(min=0)[:, None])[:, 0]  # (N,)
    return -torch.where(labels >= 0, picked, log_p.mean(dim=1)).mean()


LOSSES = {"cross_entropy": cross_entropy, "map": map_loss}  # keys: arch.LOSSES


def softmax_curvature(logits: torch.Tensor) -> torch.Tensor:
    """Per-image Gauss-Newton diagonal of the cross-entropy w.r.t. the logits: p (1 - p)."""
    p = F.softmax(logits, dim=1)  # (N, K)
    return p * (1 - p)


def map_curvature(features: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Per-image diagonal Hessian of the MAP loss w.r.t. F6's outputs x (N, F) through the
    fixed RBF: 2 (1 - P) + 4 (sum_i p_i d_ij^2 - (sum_i p_i d_ij)^2), d_ij = x_j - c_ij
    (derived in the NumPy engine's ``losses.map_curvature``)."""
    diff = features[:, None, :] - centres  # (N, K, F)
    p = map_log_probs(-(diff * diff).sum(dim=2)).exp()  # (N, K)
    mean_d = torch.einsum("nk,nkf->nf", p, diff)  # (N, F)
    mean_d2 = torch.einsum("nk,nkf->nf", p, diff * diff)
    return 2 * (1 - p.sum(dim=1, keepdim=True)) + 4 * (mean_d2 - mean_d**2)
