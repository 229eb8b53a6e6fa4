"""The kNN-LM math (Khandelwal et al. 2020, "Generalization through Memorization: Nearest Neighbor
Language Models", https://arxiv.org/abs/1911.00172), as small pure torch functions in log space.

Notation: k neighbours retrieved for one context, d_j their squared L2 distances to the query,
v_j the token that followed each neighbour's context, T the temperature, V the vocabulary size,
λ the interpolation weight. Every input and output is a log-probability unless the name says
otherwise; ``-inf`` is probability 0.
"""

from __future__ import annotations

import math

import torch


def knn_distribution(distances: torch.Tensor, values: torch.Tensor, vocab_size: int, temperature: float = 1.0) -> torch.Tensor:
    """log p_kNN(w) = log Σ_{j : v_j = w} softmax_j(−d_j / T)   (the paper's Eq. 2).

    A token no neighbour predicts gets ``-inf``; without neighbours (k = 0) every token does.
    distances: (..., k) squared L2; values: (..., k) token ids.  Returns (..., V) float64.
    """
    weights = neighbour_logweights(distances, temperature)  # (..., k)
    out = torch.full((*weights.shape[:-1], vocab_size), -math.inf, dtype=weights.dtype)  # (..., V)
    if weights.shape[-1] == 0:
        return out
    return _scatter_logsumexp(out, values.long(), weights)


def neighbour_logweights(distances: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax_j(−d_j / T): each neighbour's share of p_kNN.  (..., k) -> (..., k)  (float64)"""
    _check_temperature(temperature)
    return torch.log_softmax(-distances.double() / temperature, dim=-1)  # (..., k)


def knn_target_logprob(distances: torch.Tensor, values: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p_kNN(w) of one given token per context, without building the (..., V) distribution:
    log Σ_{j : v_j = w} softmax_j(−d_j / T).  Equal to ``knn_distribution(...).gather(targets)``.

    distances, values: (N, k); targets: (N,).  Returns (N,).
    """
    weights = neighbour_logweights(distances, temperature)  # (N, k)
    hits = values.long() == targets.long().unsqueeze(-1)  # (N, k)
    return torch.logsumexp(weights.masked_fill(~hits, -math.inf), dim=-1)  # (N,)


def interpolate(lm_logprobs: torch.Tensor, knn_logprobs: torch.Tensor, lam: float) -> torch.Tensor:
    """log p(w) = log(λ · p_kNN(w) + (1 − λ) · p_LM(w))   (the paper's Eq. 3), elementwise.

    λ = 0 returns ``lm_logprobs`` and λ = 1 returns ``knn_logprobs`` exactly (no log(0) arithmetic).
    lm_logprobs, knn_logprobs: any equal shapes, e.g. (..., V) distributions or (N,) chosen tokens.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"the interpolation weight λ must be in [0, 1], got {lam}")
    if lam == 0.0:
        return lm_logprobs
    if lam == 1.0:
        return knn_logprobs.to(lm_logprobs.dtype)
    knn = knn_logprobs.double() + math.log(lam)  # (...)
    lm = lm_logprobs.double() + math.log1p(-lam)  # (...)
    return torch.logaddexp(knn, lm).to(lm_logprobs.dtype)  # (...)


def knn_share(mixed_logprob: torch.Tensor, knn_logprob: torch.Tensor, lam: float) -> torch.Tensor:
    """λ · p_kNN(w) / p(w): the datastore's share of a token's interpolated probability, in [0, 1].

    mixed_logprob: log p(w) from :func:`interpolate`; knn_logprob: log p_kNN(w); same shapes.
    """
    if lam == 0.0:
        return torch.zeros_like(mixed_logprob)
    share = torch.exp(math.log(lam) + knn_logprob.double() - mixed_logprob.double())  # (...)
    return share.clamp(0.0, 1.0).to(mixed_logprob.dtype)


def perplexity(token_logprobs: torch.Tensor) -> float:
    """exp(−mean log p(w_t | w_<t)) over the scored tokens.  token_logprobs: (N,) -> float"""
    if token_logprobs.numel() == 0:
        raise ValueError("perplexity needs at least one scored token")
    return float(torch.exp(-token_logprobs.double().mean()))


def _scatter_logsumexp(out: torch.Tensor, index: torch.Tensor, logweights: torch.Tensor) -> torch.Tensor:
    """out[..., index[..., j]] = logsumexp of the logweights sharing that index (others stay -inf)."""
    top = logweights.max(dim=-1, keepdim=True).values  # (..., 1): the largest weight, for stability
    summed = torch.zeros_like(out).scatter_add(-1, index, torch.exp(logweights - top))  # (..., V)
    return torch.where(summed > 0, torch.log(summed) + top, out)  # (..., V)


def _check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"the kNN temperature must be > 0, got {temperature}")
