"""The null document, PMI support and context-aware decoding: the math by hand, the modes' contracts
on the tiny random LM (limits computable by hand), and the streamed labels against the whole."""

import dataclasses
import math
import random

import pytest
import torch

from assistant.answer import Support
from assistant.config import AnswerConfig
from assistant.decoding import Contrast, grounded_mixture, mixture
from assistant.engine import load_mode
from assistant.grounding import (
    adaptive_context_weight,
    context_aware,
    grounded_doc_logprobs,
    grounded_mixture_logprobs,
    jensen_shannon,
    plausible,
    pmi,
)
from assistant.lockstep import LockstepBatch
from assistant.modes.mixture import stream_grounded, stream_mixture
from assistant.prompts import build_prompts, chunk_context
from assistant.support import (
    SupportRule,
    SupportStream,
    content_phrases,
    content_word_labels,
    label_support,
    pmi_labeller,
)
from tests import tinylm

QUESTION = tinylm.QUESTION


@pytest.fixture(scope="module")
def gen():
    return tinylm.make_generator()


@pytest.fixture(scope="module")
def hits():
    return tinylm.OverlapRetriever(tinylm.make_chunks(tinylm.FACTS)).search(QUESTION, 3)


PLAIN = {"context_weight": 0.0, "plausibility": 0.0, "context_contrast": "chunk", "prior_question_weight": 0.0,
         "quote_penalty": 0.0, "context_focus": False}  # the papers' math: no contrast with ∅, the retrieval prior,
# no quote constraint, the chunks as they are


def cfg(**kw):
    return AnswerConfig(**{"k": 3, "max_new_tokens": 8, **PLAIN, **kw})


def logprobs_after(gen, ids):
    with torch.no_grad():
        return torch.log_softmax(gen.model(input_ids=torch.tensor([ids])).logits[0, -1].float(), dim=-1)


# --- the math by hand ---------------------------------------------------------------------------

def test_pmi_is_the_log_ratio_to_the_null_document():
    doc = torch.log(torch.tensor([0.5, 0.1, 0.0]))
    null = torch.log(torch.tensor(0.25))
    out = pmi(doc, null)
    assert out[0] == pytest.approx(math.log(2)) and out[1] == pytest.approx(math.log(0.4))
    assert out[2] == -math.inf


def test_context_aware_decoding_by_hand():
    p = torch.tensor([0.6, 0.3, 0.1])  # p(y|x,z)
    q = torch.tensor([0.8, 0.1, 0.1])  # p(y|x,∅)
    for alpha in (0.5, 1.0, 2.0):
        raw = p ** (1 + alpha) / q ** alpha
        want = raw / raw.sum()
        got = context_aware(p.log().unsqueeze(0), q.log(), alpha)[0].exp()
        assert got.tolist() == pytest.approx(want.tolist(), abs=1e-6)
    # α = 0 is the chunk's own distribution, untouched
    assert context_aware(p.log().unsqueeze(0), q.log(), 0.0) is not None
    assert torch.equal(context_aware(p.log().unsqueeze(0), q.log(), 0.0), p.log().unsqueeze(0))
    # the contrast moves mass toward what the chunk raised (token 1: 0.3 vs 0.1)
    assert context_aware(p.log().unsqueeze(0), q.log(), 1.0)[0].exp()[1] > 0.3


def test_the_penalty_only_contrast_by_hand():
    """log p̃ = log p(y|x,z) + α · min(0, PMI): only the token the chunk made less likely than the
    model's memory (token 0: 0.6 against 0.9) loses mass; the others keep their ratios."""
    p = torch.tensor([0.6, 0.3, 0.1])  # p(y|x,z)
    q = torch.tensor([0.9, 0.05, 0.05])  # p(y|x,∅)
    for alpha in (1.0, 3.0):
        raw = torch.tensor([0.6 * (0.6 / 0.9) ** alpha, 0.3, 0.1])
        got = context_aware(p.log().unsqueeze(0), q.log(), alpha, penalty_only=True)[0].exp()
        assert got.tolist() == pytest.approx((raw / raw.sum()).tolist(), abs=1e-6)
        assert float(got[1] / got[2]) == pytest.approx(3.0, rel=1e-5)  # raised tokens are not raised further
    assert int(context_aware(p.log().unsqueeze(0), q.log(), 1.0, penalty_only=True).argmax()) == 0
    assert int(context_aware(p.log().unsqueeze(0), q.log(), 3.0, penalty_only=True).argmax()) == 1  # the document's
    # a chunk that raises every token it likes (PMI >= 0 wherever it has mass) is left exactly as it is
    agree = torch.log(torch.tensor([0.5, 0.5, 0.0]))
    out = context_aware(agree.unsqueeze(0), torch.log(torch.tensor([0.4, 0.4, 0.2])), 5.0, penalty_only=True)[0]
    assert out.exp().tolist() == pytest.approx([0.5, 0.5, 0.0], abs=1e-6)


def test_the_penalty_only_contrast_of_the_mixture():
    memory = torch.log(torch.tensor([0.90, 0.0001, 0.0999]))
    stating = torch.log(torch.tensor([0.10, 0.80, 0.10]))
    docs = torch.stack([memory] * 4 + [stating])  # (k, V)
    prior = torch.log(torch.tensor([0.2425] * 4 + [0.03]))
    mix = torch.logsumexp(docs + prior[:, None], dim=0)
    whole = grounded_mixture_logprobs(docs, memory, prior, 2.0, False, 0.0, penalty_only=True)
    raw = mix.exp() * torch.clamp(mix.exp() / memory.exp(), max=1.0) ** 2
    assert whole.exp().tolist() == pytest.approx((raw / raw.sum()).tolist(), abs=1e-5)
    rows = torch.cat([docs, memory.unsqueeze(0)]).unsqueeze(0)  # (beams=1, k + 1, V)
    via = grounded_mixture(prior, Contrast(alpha=2.0, target="mixture", penalty_only=True))(rows)[0]
    assert torch.allclose(via, whole, atol=1e-6)


def test_the_conflict_gate_contrasts_only_where_a_chunk_contradicts_plain_decoding():
    """Vocabulary (Baku, Yerevan, other); four silent chunks (the model's memory) and one more.
    When that chunk states Yerevan it lowers Baku ninefold (PMI −2.2 < −2): contrast. When it
    confirms Baku: plain RAG-Token, exactly."""
    from assistant.grounding import contradicted
    memory = torch.log(torch.tensor([0.90, 0.0001, 0.0999]))
    prior = torch.log(torch.tensor([0.2425] * 4 + [0.03]))
    gated = Contrast(alpha=1.0, beta=0.1, target="mixture", conflict=2.0)
    for other, conflict in (([0.10, 0.80, 0.10], True), ([0.95, 0.0001, 0.0499], False)):
        docs = torch.stack([memory] * 4 + [torch.log(torch.tensor(other))])  # (k, V)
        plain = torch.logsumexp(docs + prior[:, None], dim=0)
        assert bool(contradicted(docs, memory, plain, 2.0)) is conflict
        rows = torch.cat([docs, memory.unsqueeze(0)]).unsqueeze(0)  # (1, k + 1, V)
        out = grounded_mixture(prior, gated)(rows)[0]
        always = grounded_mixture(prior, Contrast(alpha=1.0, beta=0.1, target="mixture"))(rows)[0]
        assert torch.equal(out, always if conflict else plain)
    assert int(out.argmax()) == 0  # the confirmed memory stays
    docs = torch.stack([memory] * 4 + [torch.log(torch.tensor([0.10, 0.80, 0.10]))])
    assert int(grounded_mixture(prior, gated)(torch.cat([docs, memory.unsqueeze(0)]).unsqueeze(0))[0].argmax()) == 1
    assert not bool(contradicted(docs, memory, torch.logsumexp(docs + prior[:, None], dim=0), 2.5))  # 9x < e^2.5


def test_follow_decodes_a_contradicted_step_from_the_contradicting_chunk_alone():
    """Silent chunks (the model's memory), one stating Yerevan, one confirming nothing: plain RAG says
    Baku; the stating chunk lowers Baku ninefold, so the step is decoded from that chunk: Yerevan."""
    from assistant.grounding import contradicting_chunk, follow_contradicting
    memory = torch.log(torch.tensor([0.90, 0.0001, 0.0999]))
    stating = torch.log(torch.tensor([0.10, 0.80, 0.10]))
    docs = torch.stack([memory, memory, stating, memory])  # (k, V)
    prior = torch.log(torch.tensor([0.4, 0.3, 0.1, 0.2]))
    plain = torch.logsumexp(docs + prior[:, None], dim=0)
    assert int(plain.argmax()) == 0 and int(contradicting_chunk(docs, memory, plain)) == 2
    assert torch.equal(follow_contradicting(docs, memory, plain), stating)
    rows = torch.cat([docs, memory.unsqueeze(0)]).unsqueeze(0)  # (1, k + 1, V)
    follow = Contrast(target="follow", conflict=2.0)
    assert follow.active and torch.equal(grounded_mixture(prior, follow)(rows)[0], stating)
    # a chunk that confirms the memory: no contradicted step, plain RAG-Token exactly
    agree = torch.stack([memory, memory, torch.log(torch.tensor([0.95, 0.0001, 0.0499])), memory])
    rows = torch.cat([agree, memory.unsqueeze(0)]).unsqueeze(0)
    assert torch.equal(grounded_mixture(prior, follow)(rows)[0], mixture(prior)(rows[:, :4])[0])
    with pytest.raises(Exception, match="context_conflict"):
        AnswerConfig(context_contrast="follow")


def test_a_token_the_null_document_rules_out_stays_finite():
    p = torch.log(torch.tensor([[0.5, 0.5]]))
    q = torch.log(torch.tensor([1.0, 0.0]))
    out = context_aware(p, q, 2.0)
    assert torch.isfinite(out).all() and out[0].exp().sum() == pytest.approx(1.0)


def test_jensen_shannon_limits():
    p = torch.log(torch.tensor([0.5, 0.5, 0.0, 0.0]))
    q = torch.log(torch.tensor([0.0, 0.0, 0.5, 0.5]))
    assert float(jensen_shannon(p, p)) == pytest.approx(0.0, abs=1e-6)
    assert float(jensen_shannon(p, q)) == pytest.approx(1.0, abs=1e-6)  # disjoint: 1 bit
    # by hand: p = (1, 0), q = (0.5, 0.5), m = (0.75, 0.25)
    a, b = torch.log(torch.tensor([1.0, 0.0])), torch.log(torch.tensor([0.5, 0.5]))
    kl_pm = math.log2(1 / 0.75)
    kl_qm = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    assert float(jensen_shannon(a, b)) == pytest.approx((kl_pm + kl_qm) / 2, abs=1e-6)
    docs = torch.stack([p, q])  # (k=2, V)
    assert adaptive_context_weight(docs, p).tolist() == pytest.approx([0.0, 1.0], abs=1e-6)


def test_plausibility_keeps_tokens_near_the_chunks_best():
    lp = torch.log(torch.tensor([[0.5, 0.06, 0.04, 0.4]]))
    assert plausible(lp, 0.1).tolist() == [[True, True, False, True]]
    assert plausible(lp, 0.0).all()


def test_grounded_doc_logprobs_is_the_identity_when_off_and_renormalised_when_on():
    torch.manual_seed(0)
    docs = torch.log_softmax(torch.randn(2, 3, 7), dim=-1)  # (beams, k, V)
    null = torch.log_softmax(torch.randn(2, 7), dim=-1)  # (beams, V)
    assert grounded_doc_logprobs(docs, null, 0.0, False, 0.0) is docs
    for alpha, adaptive, beta in ((1.0, False, 0.1), (1.0, True, 0.0), (0.5, True, 0.2)):
        out = grounded_doc_logprobs(docs, null, alpha, adaptive, beta)
        assert out.exp().sum(-1).flatten().tolist() == pytest.approx([1.0] * 6, abs=1e-5)
        if beta:  # an implausible token under a chunk gets probability 0 there
            assert torch.equal(out == -math.inf, ~plausible(docs, beta))


def test_grounded_mixture_with_the_contrast_off_is_the_plain_mixture():
    torch.manual_seed(1)
    prior = torch.log_softmax(torch.randn(3), dim=-1)
    rows = torch.log_softmax(torch.randn(2, 4, 11), dim=-1)  # (beams, k + 1, V)
    assert torch.equal(grounded_mixture(prior, Contrast())(rows), mixture(prior)(rows[:, :3]))
    # with the contrast on: the mixture of the hand-made CAD distributions
    on = grounded_mixture(prior, Contrast(alpha=1.0))(rows)
    cad = torch.log_softmax(2 * rows[:, :3] - rows[:, 3:], dim=-1)  # (beams, k, V)
    assert torch.allclose(on, torch.logsumexp(cad + prior[:, None], dim=1), atol=1e-5)


# --- support labels ------------------------------------------------------------------------------

def test_a_token_equally_likely_under_every_chunk_and_the_null_is_model():
    texts = [" Warsaw", " was", " nice", "."]
    labels = label_support(texts, [[0.0, 0.0]] * 4, [0.3] * 4, ["alpha", "beta"], "where?")
    assert [s.label for s in labels] == ["model"] * 4
    assert [s.content for s in labels] == [True, False, True, False]
    assert all(s.chunk is None for s in labels)


def test_a_phrase_raised_by_a_chunk_is_document_with_that_chunk_even_where_later_tokens_are_not():
    # "1874": the chunk raises the first digits, the model alone then guesses the last one as well
    texts = [" in", " ", "1", "8", "7", "4", "."]
    pmis = [[0, 0], [0, 0], [0.1, 0.2], [0.2, 2.5], [0.0, 0.3], [0.0, 0.0], [0, 0]]
    labels = label_support(texts, pmis, [0.5] * 7, ["no year here", "built in 1874"], "when was it built?")
    assert [s.label for s in labels[2:6]] == ["document"] * 4
    assert {s.chunk for s in labels[2:6]} == {1}
    assert labels[0].label == "model" and not labels[0].content
    assert labels[2].pmi == (0.1, 0.2)


def test_copy_evidence_and_its_limit():
    texts = [" Lyon"]
    rule = SupportRule(threshold=2.0, copy_threshold=0.0)
    assert label_support(texts, [[0.5, 0.5]], [0.2], ["the capital is lyon", "paris"], "?", rule)[0].chunk == 0
    # quoted but made less likely than the model alone says: not the chunk's doing
    assert label_support(texts, [[-0.5, 0.5]], [0.2], ["the capital is lyon", "paris"], "?", rule)[0].label == "model"
    # a word the chunk does not contain needs the PMI threshold
    assert label_support(texts, [[1.0, 1.0]], [0.2], ["lyonnais", "paris"], "?", rule)[0].label == "model"


def test_a_repeat_of_a_quoted_word_is_the_chunks_again():
    # the second " 2004" follows the first: the chunk no longer raises it above the closed-book row
    texts = [" in", " 2004", ",", " updated", " in", " 2004", "."]
    pmis = [[0, 0], [2.0, 0.0], [0, 0], [0, 0], [0, 0], [-2.0, 0.0], [0, 0]]
    labels = label_support(texts, pmis, [0.5] * 7, ["it changed in 2004", "nothing"], "when?")
    assert (labels[1].label, labels[1].chunk) == ("document", 0)
    assert (labels[5].label, labels[5].chunk) == ("document", 0)
    # a repeat of a word the model wrote on its own stays the model's
    pmis[1] = [-2.0, 0.0]
    labels = label_support(texts, pmis, [0.5] * 7, ["it changed in 2004", "nothing"], "when?")
    assert labels[1].label == labels[5].label == "model"
    # and so does a repeat the chunk does not contain
    labels = label_support([" harbour", " and", " harbour"], [[0.0, 3.0], [0, 0], [-2.0, -2.0]], [0.5] * 3,
                           ["paris", "its harbours"], "?", SupportRule(threshold=2.0))
    assert (labels[0].label, labels[2].label) == ("document", "model")


def test_words_of_the_question_and_function_words_are_not_content():
    phrases = content_phrases([" Marie", " Curie", " was", " born", " in", " Warsaw", "."], {"born"})
    assert [p.text for p in phrases] == ["Marie Curie", "Warsaw"]
    assert phrases[0].tokens == (0, 1)


def test_unscored_chunks_are_null_in_json_and_never_support():
    s = label_support([" x"], [[-math.inf, float("nan")]], [0.1], ["x", "x"], "?")[0]
    assert s.pmi == (None, None) and s.label == "model"
    assert Support("document", 0, (1.0,), 0.5, True).to_json() == {
        "label": "document", "chunk": 0, "pmi": [1.0], "closed_book": 0.5, "content": True}
    with pytest.raises(ValueError):
        Support("memory")


def test_streamed_labels_equal_the_labels_of_the_whole_answer():
    rng = random.Random(7)
    pieces = [" Jomo", " Ken", "y", "atta", " was", " the", " first", " president", ",", " in", " ", "1", "9", "6",
              "4", ".", " Nairobi", " is", " the", " capital"]
    for trial in range(30):
        texts = pieces[: rng.randint(1, len(pieces))]
        evidence = [([rng.uniform(-3, 3), rng.uniform(-3, 3)], 0.5) for _ in texts]
        chunks = ["jomo kenyatta ruled", "nairobi 1964"]
        label = pmi_labeller(chunks, "who was the president?", SupportRule())
        stream = SupportStream(label, "who was the president?")
        released = []
        for t, e in zip(texts, evidence):
            released += stream.push(t, e)
        released += stream.finish()
        assert [i for i, _ in released] == list(range(len(texts)))
        assert [s for _, s in released] == label(texts, evidence)


def test_content_word_counts_join_the_tokens_of_a_word():
    from assistant.answer import TokenProvenance

    def tok(text, label, content):
        return TokenProvenance(text, 0.5, (), support=Support(label, 0 if label == "document" else None, (), None, content))

    tokens = [tok(" Ken", "document", True), tok("y", "document", True), tok("atta", "model", True),
              tok(" was", "model", False), tok(" born", "document", True), tok(" ", "model", False),
              tok("1", "document", True), tok("9", "document", True)]
    assert content_word_labels(tokens) == ["model", "document", "document"]


# --- the modes on the tiny random LM ---------------------------------------------------------------

def test_with_the_contrast_off_rag_token_decodes_exactly_as_the_plain_mixture(gen, hits):
    config = cfg()
    answer = load_mode("rag-token", gen, config).answer(QUESTION, [], hits)
    prompts = build_prompts(gen, QUESTION, [], [chunk_context(h, 2000) for h in hits], config)
    prior = torch.log_softmax(torch.tensor([h.dense_score for h in hits]) / config.prior_temperature, dim=-1)
    plain = list(stream_mixture(gen, prompts, prior, config))
    assert [t.text for t in answer.tokens] == [text for _, text in plain]
    assert [t.prob for t in answer.tokens] == pytest.approx([math.exp(s.logprob) for s, _ in plain], abs=1e-5)


def prior_of(hits, config):
    return torch.log_softmax(torch.tensor([h.dense_score for h in hits]) / config.prior_temperature, dim=-1)


def grounded_steps(gen, hits, config):
    """rag-token's decoding: (prompts with the null prompt last, [(step, text)])."""
    prompts = build_prompts(gen, QUESTION, [], [chunk_context(h, 2000) for h in hits] + [None], config)
    return prompts, list(stream_grounded(gen, prompts, prior_of(hits, config), config))


def test_the_null_row_scores_like_the_closed_book_prompt_and_the_chunk_rows_like_their_prompts(gen, hits):
    config = cfg()
    prompts, steps = grounded_steps(gen, hits, config)
    ids = [s.token_id for s, _ in steps]
    closed = build_prompts(gen, QUESTION, [], [None], config)[0]
    assert prompts[-1] == closed  # the null document is the closed-book mode's prompt
    for i, (step, _) in enumerate(steps):  # brute force: one unbatched forward pass per row and token
        want = [float(logprobs_after(gen, p + ids[:i])[ids[i]]) for p in prompts]
        assert list(step.row_logprobs) == pytest.approx(want, abs=1e-4)


def test_rag_token_support_carries_the_steps_pmi_and_closed_book_probability(gen, hits):
    config = cfg()
    _, steps = grounded_steps(gen, hits, config)
    answer = load_mode("rag-token", gen, config).answer(QUESTION, [], hits)
    assert [t.text for t in answer.tokens] == [text for _, text in steps]
    for t, (step, _) in zip(answer.tokens, steps):
        rows = step.row_logprobs
        assert t.support.closed_book == pytest.approx(math.exp(rows[-1]), rel=1e-5)
        assert list(t.support.pmi) == pytest.approx([r - rows[-1] for r in rows[:-1]], abs=1e-4)


def test_closed_book_tokens_are_model_with_their_own_probability(gen):
    closed = load_mode("closed-book", gen, cfg()).answer(QUESTION, [], [])
    assert all(t.support.label == "model" and t.support.closed_book == t.prob for t in closed.tokens)


def test_rag_sequence_null_scores_equal_the_closed_book_prompts(gen, hits):
    from assistant.modes.rag_sequence import RagSequenceSettings, hypotheses_per_chunk

    config = cfg(max_new_tokens=5)
    prompts = build_prompts(gen, QUESTION, [], [chunk_context(h, 2000) for h in hits], config)
    closed = build_prompts(gen, QUESTION, [], [None], config)[0]
    table = hypotheses_per_chunk(gen, prompts, closed, config, RagSequenceSettings(decoding="thorough"))
    for hyp, null in zip(table.hypotheses, table.null):
        ids = hyp.token_ids
        want = [float(logprobs_after(gen, closed + list(ids[:i]))[t]) for i, t in enumerate(ids)]
        assert null.tolist() == pytest.approx(want, abs=1e-4)


def test_context_aware_rag_token_decodes_the_contrasted_mixture(gen, hits):
    config = cfg(context_weight=1.0, plausibility=0.1)
    prompts, steps = grounded_steps(gen, hits, config)
    prior = prior_of(hits, config)
    ids = [s.token_id for s, _ in steps]
    for i, (step, _) in enumerate(steps):  # brute force: one unbatched forward pass per row and token
        rows = torch.stack([logprobs_after(gen, p + ids[:i]) for p in prompts])  # (k + 1, V)
        docs = grounded_doc_logprobs(rows[:3], rows[3], 1.0, False, 0.1)  # (k, V)
        mixed = torch.logsumexp(docs + prior[:, None], dim=0)  # (V,)
        assert int(mixed.argmax()) == ids[i]
        assert step.logprob == pytest.approx(float(mixed[ids[i]]), abs=1e-3)
    plain = [s.token_id for s, _ in grounded_steps(gen, hits, cfg())[1]]
    assert ids != plain  # the contrast changed the answer on this prompt


def test_every_mode_labels_every_token(gen, hits):
    for name in ("rag-token", "rag-sequence", "concat", "closed-book"):
        answer = load_mode(name, gen, cfg()).answer(QUESTION, [], [] if name == "closed-book" else hits)
        assert answer.tokens and all(t.support is not None for t in answer.tokens)
        assert all(t.support.chunk is None or 0 <= t.support.chunk < len(answer.chunks) for t in answer.tokens)


def test_lockstep_rows_are_independent_of_the_null_row(gen, hits):
    """The null row added to the batch leaves the chunk rows' log-probs as they were (padding aside)."""
    config = cfg()
    prompts = build_prompts(gen, QUESTION, [], [chunk_context(h, 2000) for h in hits], config)
    null = build_prompts(gen, QUESTION, [], [None], config)
    alone = LockstepBatch(gen.model, prompts, gen.pad_id).prefill()
    with_null = LockstepBatch(gen.model, prompts + null, gen.pad_id).prefill()
    assert torch.allclose(alone, with_null[:3], atol=1e-5)


def test_contrasting_the_mixture_lets_the_one_chunk_that_states_a_fact_outvote_the_silent_ones():
    """Vocabulary (Baku, Yerevan, other). Four chunks say nothing about the capital (their
    distribution is the model's memory), one states Yerevan; prior 0.97 on the silent ones."""
    memory = torch.log(torch.tensor([0.90, 0.0001, 0.0999]))
    stating = torch.log(torch.tensor([0.10, 0.80, 0.10]))
    docs = torch.stack([memory] * 4 + [stating])  # (k, V)
    prior = torch.log(torch.tensor([0.2425] * 4 + [0.03]))
    plain = torch.logsumexp(docs + prior[:, None], dim=0)
    per_chunk = torch.logsumexp(grounded_doc_logprobs(docs, memory, 1.0, False, 0.1) + prior[:, None], dim=0)
    whole = grounded_mixture_logprobs(docs, memory, prior, 1.0, False, 0.1)
    assert int(plain.argmax()) == 0 and int(per_chunk.argmax()) == 0  # memory wins both
    assert int(whole.argmax()) == 1  # the contrast of the mixture follows the document
    # by hand: p̃ ∝ p_mix² / p_∅ over the tokens plausible under some chunk
    mix = plain.exp()
    raw = mix ** 2 / memory.exp()
    assert whole.exp().tolist() == pytest.approx((raw / raw.sum()).tolist(), abs=1e-5)
    assert torch.equal(grounded_mixture_logprobs(docs, memory, prior, 0.0, False, 0.0), plain)


def test_the_mixture_contrast_in_rag_token(gen, hits):
    config = cfg(context_weight=1.0, plausibility=0.1, context_contrast="mixture")
    prompts, steps = grounded_steps(gen, hits, config)
    prior = prior_of(hits, config)
    ids = [s.token_id for s, _ in steps]
    for i, (step, _) in enumerate(steps):
        rows = torch.stack([logprobs_after(gen, p + ids[:i]) for p in prompts])  # (k + 1, V)
        whole = grounded_mixture_logprobs(rows[:3], rows[3], prior, 1.0, False, 0.1)  # (V,)
        assert int(whole.argmax()) == ids[i]
        assert step.logprob == pytest.approx(float(whole[ids[i]]), abs=1e-3)


def test_the_defaults_decode_as_plain_rag_with_the_null_row_for_support():
    """docs/benchmarks.md's grounding table: every contrast measured cost the ordinary questions more
    than 2 points of answer recall, so it is a setting, off by default."""
    from assistant.modes.mixture import contrast_of

    assert not contrast_of(AnswerConfig()).active


# --- the generator's question likelihood as the prior ------------------------------------------------

def test_common_suffix_length_by_hand():
    from assistant.modes.rag_token import common_suffix_length

    assert common_suffix_length([[1, 2, 3, 9], [5, 3, 9], [7, 7, 7, 4, 3, 9]]) == 2
    assert common_suffix_length([[1, 2], [1, 3]]) == 0
    assert common_suffix_length([[4, 5], [3, 4, 5]]) == 2  # a whole prompt


def test_question_logprobs_are_the_teacher_forced_question_under_each_chunk(gen, hits):
    from assistant.modes.rag_token import common_suffix_length, question_logprobs

    config = cfg()
    prompts = build_prompts(gen, QUESTION, [], [chunk_context(h, 2000) for h in hits] + [None], config)
    n = common_suffix_length(prompts)
    suffix = prompts[-1][-n:]
    assert gen.tokenizer.decode(suffix).split()[:6] == QUESTION.split()  # the question, then the template's end
    got = question_logprobs(gen, prompts[:-1], prompts[-1])
    for z, p in enumerate(prompts[:-1]):  # brute force: one forward pass per prefix
        want = sum(float(logprobs_after(gen, p[:j])[p[j]]) for j in range(len(p) - n, len(p)))
        assert float(got[z]) == pytest.approx(want, abs=1e-3)


def test_question_tokens_stop_short_of_a_whole_prompt():
    from assistant.modes.rag_token import question_tokens

    assert question_tokens([[1, 2, 3, 9], [5, 3, 9], [7, 7, 7, 4, 3, 9]]) == 2
    assert question_tokens([[4, 5], [3, 4, 5]]) == 1  # the first token of a prompt has nothing before it
    assert question_tokens([[1, 2], [1, 3]]) == 0


def reranked_by_extra_prefill(gen, hits, config, beam_size=1):
    """Reference: the question-likelihood prior by an extra prefill (question_logprobs), then decoding
    with it; what rag-token did before its decoding prefill scored the question. Returns the prior,
    the token texts and their posteriors."""
    from assistant.marginals import question_likelihood_prior, rag_token_posterior
    from assistant.modes.base import prior_scores
    from assistant.modes.rag_token import question_logprobs

    prompts = build_prompts(gen, QUESTION, [], [chunk_context(h, config.chunk_chars) for h in hits] + [None], config)
    prior = question_likelihood_prior(prior_scores(hits, config.prior_score), question_logprobs(gen, prompts[:-1], prompts[-1]),
                                      config.prior_temperature, config.prior_question_weight)  # (k,)
    steps = list(stream_grounded(gen, prompts, prior, config, beam_size))
    posteriors = [rag_token_posterior(torch.tensor(s.row_logprobs[:-1]), prior).tolist() for s, _ in steps]
    return prior.exp().tolist(), [text for _, text in steps], posteriors


def test_rag_token_reranked_by_its_decoding_prefill_answers_as_with_the_extra_prefill(gen, hits):
    """The default prior (q = 0.5) from the decoding prefill's own question log-probs: the same
    answers and posteriors as the extra prefill gave, alone, with the prefix cache (cold, and the
    same question again) and in a shared batch; beam search too."""
    from assistant.batching import BatchScheduler
    from assistant.config import ModeTables
    from assistant.generator import Generator

    config = cfg(prior_question_weight=AnswerConfig().prior_question_weight, max_new_tokens=10)
    assert config.prior_question_weight == 0.5
    cached = Generator(gen.model, gen.tokenizer, prefix_cache_mb=8)
    shared = Generator(gen.model, gen.tokenizer, prefix_cache_mb=8)
    shared.batching = BatchScheduler(gen.model, gen.pad_id, gather_seconds=0.0, prefix_cache=shared.prefix_cache)
    retrieval = load_mode("rag-token", gen, cfg()).answer(QUESTION, [], hits)
    for beam_size, generators in ((1, [gen, cached, cached, shared, shared]), (2, [gen])):
        prior, texts, posteriors = reranked_by_extra_prefill(gen, hits, config, beam_size)
        assert prior != pytest.approx([c.prior for c in retrieval.chunks], abs=1e-3)  # the reranking matters here
        mode_config = dataclasses.replace(config, modes=ModeTables({"rag-token": {"beam_size": beam_size}}))
        for generator in generators:
            answer = load_mode("rag-token", generator, mode_config).answer(QUESTION, [], hits)
            assert [c.prior for c in answer.chunks] == pytest.approx(prior, abs=1e-5)
            assert [t.text for t in answer.tokens] == texts and len(texts) > 2
            for got, want in zip(answer.tokens, posteriors, strict=True):
                assert list(got.posterior) == pytest.approx(want, abs=1e-5)
    assert cached.prefix_cache.hit_tokens > 0 and shared.prefix_cache.hit_tokens > 0
    shared.batching.close()


def test_rag_token_with_the_question_prior_reports_it_and_is_unchanged_at_weight_zero(gen, hits):
    from assistant.marginals import question_likelihood_prior
    from assistant.modes.rag_token import question_logprobs

    plain = load_mode("rag-token", gen, cfg()).answer(QUESTION, [], hits)
    off = load_mode("rag-token", gen, cfg(prior_question_weight=0.0)).answer(QUESTION, [], hits)
    assert off.to_json() == plain.to_json()
    config = cfg(prior_question_weight=1.0)
    prompts = build_prompts(gen, QUESTION, [], [chunk_context(h, 2000) for h in hits] + [None], config)
    want = question_likelihood_prior(torch.tensor([h.dense_score for h in hits]), question_logprobs(gen, prompts[:-1], prompts[-1]),
                                     config.prior_temperature, 1.0).exp()
    answer = load_mode("rag-token", gen, config).answer(QUESTION, [], hits)
    assert [c.prior for c in answer.chunks] == pytest.approx(want.tolist(), abs=1e-5)
    assert [c.prior for c in answer.chunks] != pytest.approx([c.prior for c in plain.chunks], abs=1e-3)
