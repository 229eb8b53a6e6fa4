"""The document against the model's own memory: the null document z = ∅ (the conversation with no
context, the closed-book prompt) as a reference point, as small pure torch functions in log space.

- PMI (the quantity PECoRe, CPMI decoding and context-aware decoding build on): how much a chunk
  raised a token above what the model says anyway.
- Context-aware decoding (Shi et al. 2023, "Trusting Your Evidence: Hallucinate Less with
  Context-aware Decoding"), with the adaptive plausibility constraint of contrastive decoding
  (Li et al. 2023) and the adaptive weight of AdaCAD (Wang et al. 2025).

Notation: k chunks, V the vocabulary; every input is a log-probability.
"""

from __future__ import annotations

import math

import torch

LN2 = math.log(2.0)
NULL_FLOOR = -1e4  # log-prob floor of the null document inside the contrast


def pmi(doc_logprobs: torch.Tensor, null_logprobs: torch.Tensor) -> torch.Tensor:
    """PMI_z(y_i) = log p(y_i | x, z, y_<i) − log p(y_i | x, ∅, y_<i).

    doc_logprobs: (..., k) the chosen token under each chunk; null_logprobs: (...) under ∅.
    Returns (..., k) in nats; −inf where a chunk gives the token probability 0 (or did not score it).
    """
    return doc_logprobs - null_logprobs.unsqueeze(-1)  # (..., k)


def jensen_shannon(p_logprobs: torch.Tensor, q_logprobs: torch.Tensor) -> torch.Tensor:
    """JSD(p ‖ q) in bits (0 = equal, 1 = disjoint supports) over the last axis.

    p_logprobs, q_logprobs: (..., V), broadcastable.  Returns (...).
    """
    p, q = p_logprobs.exp(), q_logprobs.exp()
    m_log = torch.logaddexp(p_logprobs, q_logprobs) - LN2  # (..., V) log of the mixture (p + q) / 2
    kl_pm = torch.where(p > 0, p * (p_logprobs - m_log), torch.zeros_like(p)).sum(-1)  # (...)
    kl_qm = torch.where(q > 0, q * (q_logprobs - m_log), torch.zeros_like(q)).sum(-1)  # (...)
    return ((kl_pm + kl_qm) / (2 * LN2)).clamp(0.0, 1.0)


def disagreement_prior(doc_logprobs: torch.Tensor, null_logprobs: torch.Tensor, doc_logprior: torch.Tensor,
                       weight: float) -> torch.Tensor:
    """log p'(z) ∝ log p(z|x) + weight · JSD(p(·|x,z,y_<i) ‖ p(·|x,∅,y_<i)): the chunks re-weighted by how much
    each one's next-token distribution departs from the model's memory (the null document's). A chunk silent on
    what is being written echoes the memory (JSD ≈ 0) and keeps its share; the one that says something else
    gains up to e^weight against it.

    doc_logprobs: (k, V); null_logprobs: (V,); doc_logprior: (k,).  Returns (k,), normalised.
    """
    scores = doc_logprior + weight * jensen_shannon(doc_logprobs, null_logprobs.unsqueeze(0))  # (k,)
    return scores - torch.logsumexp(scores, dim=0)


def adaptive_context_weight(doc_logprobs: torch.Tensor, null_logprobs: torch.Tensor) -> torch.Tensor:
    """AdaCAD's per-token α = JSD(p(·|x,z) ‖ p(·|x,∅)): large only where the chunk and the model's
    memory disagree, so agreeing steps decode as plain RAG.

    doc_logprobs: (..., k, V); null_logprobs: (..., V).  Returns (..., k) in [0, 1].
    """
    return jensen_shannon(doc_logprobs, null_logprobs.unsqueeze(-2))  # (..., k)


def context_aware(
    doc_logprobs: torch.Tensor, null_logprobs: torch.Tensor, alpha: torch.Tensor | float, penalty_only: bool = False
) -> torch.Tensor:
    """Context-aware decoding: p̃(y | x, z) ∝ p(y | x, z)^(1+α) / p(y | x, ∅)^α, per chunk, i.e.
    log p̃ = log p(y|x,z) + α · PMI_z(y) renormalised.

    ``penalty_only`` keeps only the lowering half, log p̃ = log p(y|x,z) + α · min(0, PMI_z(y)): a token
    the chunk made *less* likely than the model's memory (the memorised value the chunk contradicts)
    is pushed down, and no token is raised above its RAG probability (so headings and context words
    the chunk primes are not amplified, and answers the chunk and the memory agree on stay as they are).

    doc_logprobs: (..., k, V); null_logprobs: (..., V); alpha: a float or (..., k).
    Returns normalised log-probs (..., k, V); α = 0 returns ``doc_logprobs`` itself.
    """
    if isinstance(alpha, (int, float)):
        if alpha == 0:
            return doc_logprobs
        weight = torch.tensor(float(alpha), dtype=doc_logprobs.dtype)
    else:
        weight = alpha.to(doc_logprobs.dtype).unsqueeze(-1)  # (..., k, 1)
    # a token the null document rules out (−inf) must not gain an infinite bonus: floor it
    null = null_logprobs.unsqueeze(-2).clamp(min=NULL_FLOOR)  # (..., 1, V)
    raise_ = doc_logprobs - null  # (..., k, V) PMI of every token
    if penalty_only:
        raise_ = raise_.clamp(max=0.0)
    return torch.log_softmax(doc_logprobs + weight * raise_, dim=-1)  # (..., k, V)


def plausible(doc_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
    """The adaptive plausibility constraint (Li et al. 2023): only tokens with
    p(y | x, z) >= β · max_y' p(y' | x, z) are eligible under chunk z.

    doc_logprobs: (..., k, V).  Returns a bool mask (..., k, V); β = 0 admits every token.
    """
    if beta <= 0:
        return torch.ones_like(doc_logprobs, dtype=torch.bool)
    best = doc_logprobs.max(dim=-1, keepdim=True).values  # (..., k, 1)
    return doc_logprobs >= best + math.log(beta)  # (..., k, V)


def contradicted(doc_logprobs: torch.Tensor, null_logprobs: torch.Tensor, plain_logprobs: torch.Tensor,
                 threshold: float) -> torch.Tensor:
    """Where a retrieved chunk contradicts what plain decoding would say: the token ŷ that the plain
    distribution ranks first is one some chunk made at least e^threshold times less likely than the
    model's memory, PMI_z(ŷ) < −threshold. A chunk that says nothing about ŷ leaves its PMI near 0, one
    that confirms it raises it; only a chunk stating something else pushes it down (the capital the
    document names instead of the one the model remembers).

    doc_logprobs: (..., k, V); null_logprobs: (..., V); plain_logprobs: (..., V).  Returns bool (...).
    """
    top = plain_logprobs.argmax(dim=-1, keepdim=True)  # (..., 1)
    doc_top = doc_logprobs.gather(-1, top.unsqueeze(-2).expand(*doc_logprobs.shape[:-1], 1)).squeeze(-1)  # (..., k)
    return (doc_top - null_logprobs.gather(-1, top)).min(dim=-1).values < -threshold  # (...)


def contradicting_chunk(doc_logprobs: torch.Tensor, null_logprobs: torch.Tensor, plain_logprobs: torch.Tensor) -> torch.Tensor:
    """The chunk that lowers plain decoding's top token most below the model's memory: argmin_z PMI_z(ŷ).

    doc_logprobs: (..., k, V); null_logprobs: (..., V); plain_logprobs: (..., V).  Returns long (...).
    """
    top = plain_logprobs.argmax(dim=-1, keepdim=True)  # (..., 1)
    doc_top = doc_logprobs.gather(-1, top.unsqueeze(-2).expand(*doc_logprobs.shape[:-1], 1)).squeeze(-1)  # (..., k)
    return doc_top.argmin(dim=-1)  # (...)


def follow_contradicting(doc_logprobs: torch.Tensor, null_logprobs: torch.Tensor, plain_logprobs: torch.Tensor) -> torch.Tensor:
    """The distribution of the chunk that contradicts plain decoding most (:func:`contradicting_chunk`):
    where a document states something else than what the model remembers, the answer goes on as that
    document alone would have it (a single chunk's own distribution, as fluent as any RAG prompt).

    doc_logprobs: (..., k, V); null_logprobs: (..., V); plain_logprobs: (..., V).  Returns (..., V).
    """
    z = contradicting_chunk(doc_logprobs, null_logprobs, plain_logprobs)  # (...)
    index = z.unsqueeze(-1).unsqueeze(-1).expand(*doc_logprobs.shape[:-2], 1, doc_logprobs.shape[-1])  # (..., 1, V)
    return doc_logprobs.gather(-2, index).squeeze(-2)  # (..., V)


def where_contradicted(gate: torch.Tensor | None, contrasted: torch.Tensor, plain: torch.Tensor) -> torch.Tensor:
    """The contrasted distribution at the steps the gate marks (every step with no gate), plain RAG elsewhere.
    gate: bool (...) or None; contrasted, plain: (..., V)."""
    return contrasted if gate is None else torch.where(gate.unsqueeze(-1), contrasted, plain)


def grounded_doc_logprobs(
    doc_logprobs: torch.Tensor, null_logprobs: torch.Tensor, alpha: float, adaptive: bool, beta: float,
    penalty_only: bool = False,
) -> torch.Tensor:
    """Each chunk's next-token distribution contrasted with the model's memory: CAD with a fixed α
    (or AdaCAD's α = JSD scaled by ``alpha`` when ``adaptive``), restricted to the tokens the
    chunk itself finds plausible, renormalised.

    doc_logprobs: (..., k, V); null_logprobs: (..., V).  Returns (..., k, V); with α = 0 and β = 0
    (and not adaptive) ``doc_logprobs`` unchanged.
    """
    if not adaptive and alpha == 0 and beta <= 0:
        return doc_logprobs
    weight: torch.Tensor | float = alpha * adaptive_context_weight(doc_logprobs, null_logprobs) if adaptive else alpha
    contrasted = context_aware(doc_logprobs, null_logprobs, weight, penalty_only)  # (..., k, V)
    if beta <= 0:
        return contrasted
    masked = contrasted.masked_fill(~plausible(doc_logprobs, beta), -math.inf)  # (..., k, V)
    return torch.log_softmax(masked, dim=-1)  # (..., k, V)


def grounded_mixture_logprobs(
    doc_logprobs: torch.Tensor, null_logprobs: torch.Tensor, doc_logprior: torch.Tensor, alpha: float, adaptive: bool,
    beta: float, penalty_only: bool = False,
) -> torch.Tensor:
    """Context-aware decoding of the RAG-Token mixture as a whole: with p(y|x,Z) = Σ_z p(z|x) p(y|x,z,y_<i),
    p̃(y | x, Z) ∝ p(y | x, Z)^(1+α) / p(y | x, ∅)^α, restricted to the tokens some chunk finds
    plausible (β). Unlike the per-chunk contrast, a chunk that says nothing about the token (its
    distribution is the null document's) cannot outvote the chunk that states it: the contrast sees
    the raise that any retrieved chunk gives a token over the model's memory.

    doc_logprobs: (..., k, V); null_logprobs: (..., V); doc_logprior: (k,).  Returns (..., V).
    """
    mix = torch.logsumexp(doc_logprobs + doc_logprior.unsqueeze(-1), dim=-2)  # (..., V)
    if not adaptive and alpha == 0 and beta <= 0:
        return mix
    weight: torch.Tensor | float = alpha * jensen_shannon(mix, null_logprobs) if adaptive else alpha  # (...) or float
    if isinstance(weight, torch.Tensor):
        weight = weight.unsqueeze(-1)  # (...) -> (..., 1): one mixture "chunk" per position
    contrasted = context_aware(mix.unsqueeze(-2), null_logprobs, weight, penalty_only).squeeze(-2)  # (..., V)
    if beta <= 0:
        return contrasted
    eligible = plausible(doc_logprobs, beta).any(dim=-2)  # (..., V): plausible under some chunk
    return torch.log_softmax(contrasted.masked_fill(~eligible, -math.inf), dim=-1)  # (..., V)
