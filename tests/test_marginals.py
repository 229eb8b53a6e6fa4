"""The RAG math against hand computations and brute-force loops written the slow obvious way."""

import math

import pytest
import torch

from assistant.marginals import (
    question_likelihood_prior,
    rag_sequence_marginal,
    rag_sequence_posterior,
    rag_sequence_token_marginals,
    rag_token_marginalize,
    rag_token_posterior,
    retrieval_prior,
    sequence_logprob,
)

torch.manual_seed(0)


def random_logprobs(*shape):
    return torch.log_softmax(torch.randn(*shape, dtype=torch.float64) * 2, dim=-1)


def test_retrieval_prior_is_a_softmax_of_scores_over_temperature():
    scores = torch.tensor([0.9, 0.5, 0.1], dtype=torch.float64)
    expected = [math.exp(s / 0.2) for s in scores.tolist()]
    expected = [e / sum(expected) for e in expected]
    got = retrieval_prior(scores, 0.2).exp()
    assert got.tolist() == pytest.approx(expected)
    assert float(got.sum()) == pytest.approx(1.0)


def test_retrieval_prior_temperature_limits():
    scores = torch.tensor([0.9, 0.5, 0.1])
    assert retrieval_prior(scores, 1e-4).exp().tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-6)
    assert retrieval_prior(scores, 1e4).exp().tolist() == pytest.approx([1 / 3] * 3, abs=1e-4)
    with pytest.raises(ValueError):
        retrieval_prior(scores, 0.0)


def test_question_likelihood_prior_is_bayes_rule_and_off_at_weight_zero():
    scores = torch.tensor([0.9, 0.5, 0.1], dtype=torch.float64)
    question = torch.tensor([math.log(0.02), math.log(0.06), math.log(0.12)], dtype=torch.float64)  # log p(x|z)
    # weight 0: the retrieval prior itself
    assert question_likelihood_prior(scores, question, 0.2, 0.0).tolist() == pytest.approx(retrieval_prior(scores, 0.2).tolist())
    # equal scores, weight 1: p(z|x) = p(x|z) / sum_z' p(x|z') = 0.02/0.2, 0.06/0.2, 0.12/0.2
    flat = torch.zeros(3, dtype=torch.float64)
    assert question_likelihood_prior(flat, question, 0.05, 1.0).exp().tolist() == pytest.approx([0.1, 0.3, 0.6])
    # both: exp(s/T) * p(x|z), normalised
    want = [math.exp(s / 0.2) * q for s, q in zip(scores.tolist(), [0.02, 0.06, 0.12])]
    got = question_likelihood_prior(scores, question, 0.2, 1.0).exp()
    assert got.tolist() == pytest.approx([w / sum(want) for w in want])
    # a term every chunk shares (the question under the null document) cancels
    assert question_likelihood_prior(scores, question - 7.0, 0.2, 1.0).tolist() == pytest.approx(got.log().tolist())
    # a large weight: the chunk that predicts the question best
    assert question_likelihood_prior(scores, question, 0.2, 1e3).exp().tolist() == pytest.approx([0, 0, 1], abs=1e-9)
    with pytest.raises(ValueError):
        question_likelihood_prior(scores, question, 0.2, -1.0)


def test_rag_token_marginalize_equals_brute_force_sum():
    k, V = 4, 7
    token_lp = random_logprobs(k, V)
    prior = random_logprobs(k)
    got = rag_token_marginalize(token_lp, prior).exp()
    for w in range(V):
        brute = sum(math.exp(prior[z]) * math.exp(token_lp[z, w]) for z in range(k))
        assert float(got[w]) == pytest.approx(brute, rel=1e-12)
    assert float(got.sum()) == pytest.approx(1.0)


def test_rag_token_marginalize_batches_over_leading_dims():
    token_lp = random_logprobs(3, 4, 5)  # (beams, k, V)
    prior = random_logprobs(4)
    got = rag_token_marginalize(token_lp, prior)
    for b in range(3):
        assert torch.allclose(got[b], rag_token_marginalize(token_lp[b], prior))


def test_rag_token_with_one_document_is_that_document():
    token_lp = random_logprobs(1, 9)
    assert torch.allclose(rag_token_marginalize(token_lp, torch.zeros(1, dtype=torch.float64)), token_lp[0])


def test_rag_token_posterior_by_hand_and_sums_to_one():
    prior = torch.log(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    chosen = torch.log(torch.tensor([0.1, 0.6, 0.3], dtype=torch.float64))
    joint = [0.5 * 0.1, 0.3 * 0.6, 0.2 * 0.3]
    got = rag_token_posterior(chosen, prior)
    assert got.tolist() == pytest.approx([j / sum(joint) for j in joint])
    many = rag_token_posterior(random_logprobs(6, 5), random_logprobs(5))
    assert torch.allclose(many.sum(-1), torch.ones(6, dtype=torch.float64))


def test_rag_token_posterior_gives_zero_to_impossible_documents():
    got = rag_token_posterior(torch.tensor([-1.0, -math.inf]), torch.log(torch.tensor([0.5, 0.5])))
    assert got.tolist() == [1.0, 0.0]


def test_rag_sequence_marginal_equals_brute_force_over_documents():
    H, k, n = 3, 4, 5
    token_lp = torch.log(torch.rand(H, k, n, dtype=torch.float64))  # per-token probs of each pair
    prior = random_logprobs(k)
    seq = sequence_logprob(token_lp)  # (H, k)
    got = rag_sequence_marginal(seq, prior).exp()
    for h in range(H):
        brute = 0.0
        for z in range(k):
            p = math.exp(prior[z])
            for i in range(n):
                p *= math.exp(token_lp[h, z, i])
            brute += p
        assert float(got[h]) == pytest.approx(brute, rel=1e-10)


def test_rag_sequence_posterior_sums_to_one_and_follows_bayes():
    seq = torch.log(torch.tensor([[0.2, 0.1], [0.01, 0.4]], dtype=torch.float64))
    prior = torch.log(torch.tensor([0.75, 0.25], dtype=torch.float64))
    got = rag_sequence_posterior(seq, prior)
    assert got[0].tolist() == pytest.approx([0.15 / 0.175, 0.025 / 0.175])
    assert torch.allclose(got.sum(-1), torch.ones(2, dtype=torch.float64))


def test_fast_decoding_minus_inf_pairs_count_as_zero():
    seq = torch.tensor([[-2.0, -math.inf]], dtype=torch.float64)
    prior = torch.log(torch.tensor([0.4, 0.6], dtype=torch.float64))
    assert float(rag_sequence_marginal(seq, prior).exp()) == pytest.approx(0.4 * math.exp(-2.0))
    assert rag_sequence_posterior(seq, prior)[0].tolist() == [1.0, 0.0]


def test_rag_sequence_token_marginals_multiply_to_the_sequence_marginal():
    n, k = 6, 3
    token_lp = torch.log(torch.rand(n, k, dtype=torch.float64))
    prior = random_logprobs(k)
    per_token = rag_sequence_token_marginals(token_lp, prior)  # (n,)
    whole = rag_sequence_marginal(token_lp.sum(0, keepdim=True), prior)[0]
    assert float(per_token.sum()) == pytest.approx(float(whole), rel=1e-10)
    # brute force for the second token: p(y_2|x,y_1) = Σ_z p(z|x,y_1) p(y_2|x,z,y_1)
    weights = [math.exp(prior[z] + token_lp[0, z]) for z in range(k)]
    brute = sum(w * math.exp(token_lp[1, z]) for z, w in enumerate(weights)) / sum(weights)
    assert float(per_token[1].exp()) == pytest.approx(brute, rel=1e-10)


def test_rag_sequence_token_marginals_with_an_unscored_document():
    token_lp = torch.tensor([[-1.0, -math.inf], [-0.5, -math.inf]], dtype=torch.float64)
    prior = torch.log(torch.tensor([0.5, 0.5], dtype=torch.float64))
    got = rag_sequence_token_marginals(token_lp, prior)
    # the first token carries the lost prior mass; afterwards only the scored document remains
    assert got.tolist() == pytest.approx([-1.0 + math.log(0.5), -0.5])
