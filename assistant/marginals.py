"""The RAG math (Lewis et al. 2020, "Retrieval-Augmented Generation for Knowledge-Intensive NLP
Tasks"), as small pure torch functions in log space.

Notation: x the question, z one of the k retrieved chunks, y = y_1..y_n the answer tokens,
V the vocabulary size, H a number of hypotheses. Every input is a log-probability unless the
name says otherwise; ``-inf`` marks an impossible (or, for RAG-Sequence "fast" decoding, an
unscored) pair and is handled as probability 0.
"""

from __future__ import annotations

import torch


def retrieval_prior(scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(z|x) = log softmax(s(z, x) / temperature) over the top-k retrieval scores.

    The paper's retriever gives p(z|x) ∝ exp(d(z)ᵀ q(x)); a temperature rescales the scores of
    other retrievers to a useful sharpness. scores: (k,) -> (k,)
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.log_softmax(scores.double() / temperature, dim=-1).to(scores.dtype)


def rag_token_marginalize(token_logprobs: torch.Tensor, doc_logprior: torch.Tensor) -> torch.Tensor:
    """RAG-Token next-token distribution: p(y_i | x, y_<i) = Σ_z p(z|x) · p(y_i | x, z, y_<i).

    token_logprobs: (..., k, V) log p(·|x, z, y_<i) for each document;
    doc_logprior: (..., k) log p(z|x).  Returns (..., V).
    """
    joint = token_logprobs + doc_logprior.unsqueeze(-1)  # (..., k, V)
    return torch.logsumexp(joint, dim=-2)  # (..., V)


def rag_token_posterior(chosen_logprobs: torch.Tensor, doc_logprior: torch.Tensor) -> torch.Tensor:
    """Per-token document posterior (the paper's Figure 2):
    p(z | x, y_i, y_<i) = p(z|x) · p(y_i | x, z, y_<i) / Σ_z' p(z'|x) · p(y_i | x, z', y_<i).

    chosen_logprobs: (..., k) log p(y_i | x, z, y_<i) of the chosen token y_i under each document;
    doc_logprior: (..., k).  Returns probabilities (..., k) that sum to 1.
    """
    return torch.softmax(chosen_logprobs + doc_logprior, dim=-1)  # (..., k)


def sequence_logprob(token_logprobs: torch.Tensor) -> torch.Tensor:
    """log p(y | x, z) = Σ_i log p(y_i | x, z, y_<i).  token_logprobs: (..., n) -> (...)"""
    return token_logprobs.sum(dim=-1)


def rag_sequence_marginal(seq_logprobs: torch.Tensor, doc_logprior: torch.Tensor) -> torch.Tensor:
    """RAG-Sequence: p(y|x) = Σ_z p(z|x) · p(y | x, z), with p(y|x,z) = Π_i p(y_i | x, z, y_<i).

    seq_logprobs: (H, k) log p(y_h | x, z); doc_logprior: (k,).  Returns (H,) log p(y_h | x).
    """
    return torch.logsumexp(seq_logprobs + doc_logprior.unsqueeze(0), dim=-1)  # (H, k) -> (H,)


def rag_sequence_posterior(seq_logprobs: torch.Tensor, doc_logprior: torch.Tensor) -> torch.Tensor:
    """p(z | x, y) = p(z|x) · p(y|x,z) / Σ_z' p(z'|x) · p(y|x,z').

    seq_logprobs: (H, k); doc_logprior: (k,).  Returns probabilities (H, k), each row summing to 1.
    """
    return torch.softmax(seq_logprobs + doc_logprior.unsqueeze(0), dim=-1)  # (H, k)


def rag_sequence_token_marginals(token_logprobs: torch.Tensor, doc_logprior: torch.Tensor) -> torch.Tensor:
    """The RAG-Sequence marginal of one hypothesis, factorized by the chain rule:
    p(y_i | x, y_<i) = Σ_z p(z | x, y_<i) · p(y_i | x, z, y_<i),  p(z | x, y_<i) ∝ p(z|x) · p(y_<i | x, z),
    so that Σ_i log p(y_i | x, y_<i) = log p(y|x) of :func:`rag_sequence_marginal`.

    token_logprobs: (n, k) log p(y_i | x, z, y_<i); doc_logprior: (k,).  Returns (n,) log-probs.
    """
    start = torch.zeros_like(token_logprobs[:1])  # (1, k)
    prefix = torch.cat([start, torch.cumsum(token_logprobs, dim=0)[:-1]])  # (n, k) log p(y_<i | x, z)
    before = prefix + doc_logprior.unsqueeze(0)  # (n, k) log p(z, y_<i | x)
    after = before + token_logprobs  # (n, k) log p(z, y_≤i | x)
    return torch.logsumexp(after, dim=-1) - torch.logsumexp(before, dim=-1)  # (n,)


def question_likelihood_prior(scores: torch.Tensor, question_logprobs: torch.Tensor, temperature: float,
                              weight: float) -> torch.Tensor:
    """The retrieval prior reweighted by how well each chunk predicts the question under the generator:
    log p(z|x) = log softmax(s(z, x) / temperature + weight · log p(x | z)) over the top k.

    With a uniform retrieval score and weight 1 this is Bayes' rule with a uniform prior over the k
    chunks, p(z|x) = p(x|z) / Σ_z' p(x|z') (the generator as a query-likelihood reranker: UPR, Sachan
    et al. 2022, "Improving Passage Retrieval with Zero-Shot Question Generation"); weight 0 is
    :func:`retrieval_prior`. Any term of log p(x|z) that every chunk shares (the question under the
    null document, the prompt's closing tokens) cancels in the softmax.

    scores: (k,); question_logprobs: (k,) log p(x | z) (summed over the question's tokens).  Returns (k,).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if weight < 0:
        raise ValueError(f"weight must be >= 0, got {weight}")
    logits = scores.double() / temperature + weight * question_logprobs.double()  # (k,)
    return torch.log_softmax(logits, dim=-1).to(scores.dtype)
