"""Contract tests of the answer modes on a tiny random LM, with limits computable by hand."""

import dataclasses
import math

import pytest
import torch

from assistant.answer import Answer, TokenProvenance
from assistant.config import AnswerConfig, ModeTables
from assistant.engine import DialogueEngine, load_mode, mode_names
from assistant.marginals import retrieval_prior
from assistant.modes.base import AnswerMode, prior_scores
from assistant.modes.rag_sequence import RagSequenceSettings, hypotheses_per_chunk
from assistant.prompts import build_prompts, chunk_context, concat_context, messages
from knowledge.errors import UnknownNameError
from tests import tinylm

TEXTS = tinylm.FACTS
QUESTION = tinylm.QUESTION


@pytest.fixture(scope="module")
def gen():
    return tinylm.make_generator()


@pytest.fixture(scope="module")
def hits():
    return tinylm.OverlapRetriever(tinylm.make_chunks(TEXTS)).search(QUESTION, 3)


PLAIN = {"context_weight": 0.0, "plausibility": 0.0, "context_contrast": "chunk", "quote_penalty": 0.0,
         "context_focus": False, "loop_words": 0, "refuse_echoes": False}  # the papers' math: no contrast with ∅, no
# quote constraint, the chunks as they are, greedy's own choice even where a tiny random model repeats itself or
# echoes the question


def cfg(modes=None, **kw):
    # finish_word_tokens 0: the references below decode exactly max_new_tokens (finishing a word past it: its own test)
    return AnswerConfig(**{"k": 3, "max_new_tokens": 8, "finish_word_tokens": 0, **PLAIN, **kw}, modes=ModeTables(modes or {}))


def mode(name, gen, own=None, **kw):
    """Mode ``name`` with its own settings ``own`` (its [answer.<name>] table) and shared ``kw``."""
    return load_mode(name, gen, cfg({name: own or {}}, **kw))


def logprobs_after(gen, ids):
    with torch.no_grad():
        return torch.log_softmax(gen.model(input_ids=torch.tensor([ids])).logits[0, -1].float(), dim=-1)


def plain_greedy(gen, prompt, n):
    """The plain LM, the slow obvious way: a full forward pass per token, no cache, no batch."""
    ids, out = list(prompt), []
    for _ in range(n):
        lp = logprobs_after(gen, ids)
        token = int(lp.argmax())
        if token in gen.eos_ids:
            break
        out.append((token, math.exp(float(lp[token]))))
        ids.append(token)
    return out


def answer_ids(gen, answer):
    return gen.tokenizer(answer.text, add_special_tokens=False)["input_ids"]


def test_builtin_modes_are_registered_and_follow_the_protocol(gen):
    assert {"rag-token", "rag-sequence", "closed-book", "concat"} <= set(mode_names())
    for name in ("rag-token", "rag-sequence", "closed-book", "concat"):
        assert isinstance(load_mode(name, gen, cfg()), AnswerMode)


def test_unknown_mode_lists_the_registered_ones(gen, hits):
    engine = DialogueEngine(tinylm.OverlapRetriever(tinylm.make_chunks(TEXTS)), gen, cfg())
    with pytest.raises(UnknownNameError) as err:
        engine.ask(QUESTION, mode="rag-tokn")
    for name in mode_names():
        assert name in str(err.value)
    with pytest.raises(UnknownNameError):
        DialogueEngine(engine.retriever, gen, cfg(mode="nope"))


def test_rag_token_with_one_document_is_the_plain_lm(gen, hits):
    answer = mode("rag-token", gen).answer(QUESTION, [], hits[:1])
    prompt = gen.render(messages(cfg().system_prompt, [], QUESTION, chunk_context(hits[0], 2000)))
    ref = plain_greedy(gen, prompt, 8)
    assert len(answer.tokens) == len(ref) > 0
    assert [t.prob for t in answer.tokens] == pytest.approx([p for _, p in ref], abs=1e-4)
    assert answer.text == gen.decode([t for t, _ in ref])
    assert all(t.posterior == (1.0,) for t in answer.tokens)
    assert answer.chunks[0].prior == pytest.approx(1.0) and answer.chunks[0].posterior == pytest.approx(1.0)


def test_rag_token_marginals_and_posteriors_equal_a_brute_force_loop(gen, hits):
    """RAG-Token greedy written the slow obvious way: each document alone, no cache, a Python sum."""
    config = cfg(prior_temperature=0.5, prior_question_weight=0.0)  # the paper's prior: retrieval alone
    answer = load_mode("rag-token", gen, config).answer(QUESTION, [], hits)
    prior = retrieval_prior(prior_scores(hits, "dense"), 0.5).exp().tolist()
    prompts = build_prompts(gen, QUESTION, [], [chunk_context(h, 2000) for h in hits], config)
    generated: list[int] = []
    for prov in answer.tokens:
        per_doc = [logprobs_after(gen, p + generated).exp() for p in prompts]  # k x (V,)
        mixture = sum(prior[z] * per_doc[z] for z in range(3))  # (V,)
        token = int(mixture.argmax())
        assert token not in gen.eos_ids
        assert prov.prob == pytest.approx(float(mixture[token]), abs=1e-4)
        joint = [prior[z] * float(per_doc[z][token]) for z in range(3)]
        assert list(prov.posterior) == pytest.approx([j / sum(joint) for j in joint], abs=1e-4)
        generated.append(token)
    assert answer.text == gen.decode(generated)
    assert [c.prior for c in answer.chunks] == pytest.approx(prior)


def test_rag_token_greedy_is_deterministic_and_posteriors_sum_to_one(gen, hits):
    m = mode("rag-token", gen)
    a, b = m.answer(QUESTION, [], hits), m.answer(QUESTION, [], hits)
    assert a == b
    assert a.text == "".join(t.text for t in a.tokens)
    for t in a.tokens:
        assert len(t.posterior) == 3 and sum(t.posterior) == pytest.approx(1.0)
    assert sum(c.posterior for c in a.chunks) == pytest.approx(1.0)
    assert sum(c.prior for c in a.chunks) == pytest.approx(1.0)


def test_rag_token_streams_the_tokens_of_its_answer(gen, hits):
    items = list(mode("rag-token", gen).stream(QUESTION, [], hits))
    assert isinstance(items[-1], Answer)
    assert all(isinstance(t, TokenProvenance) for t in items[:-1])
    assert tuple(items[:-1]) == items[-1].tokens


def test_max_new_tokens_is_honoured(gen, hits):
    for name in ("rag-token", "rag-sequence", "closed-book", "concat"):
        answer = mode(name, gen, max_new_tokens=2).answer(QUESTION, [], hits)
        assert 0 < len(answer.tokens) <= 2, name


def test_stop_strings_end_the_answer(gen, hits):
    full = mode("rag-token", gen).answer(QUESTION, [], hits)
    word = full.tokens[2].text.strip()
    assert word
    for name in ("rag-token", "rag-sequence", "concat"):
        free = mode(name, gen).answer(QUESTION, [], hits)
        stop_word = next(t.text.strip() for t in free.tokens[1:] if t.text.strip())
        stopped = mode(name, gen, stop=(stop_word,)).answer(QUESTION, [], hits)
        assert stop_word not in stopped.text
        assert stopped.text == "".join(t.text for t in stopped.tokens)
        if name != "rag-sequence":  # greedy: the same tokens up to the stop string
            assert free.text.startswith(stopped.text)
    stopped = mode("rag-token", gen, stop=(word,)).answer(QUESTION, [], hits)
    assert stopped.text == full.text[: full.text.index(word)]


def test_rag_token_beam_search(gen, hits):
    greedy = mode("rag-token", gen).answer(QUESTION, [], hits)
    one = mode("rag-token", gen, {"beam_size": 1}).answer(QUESTION, [], hits)
    beam = mode("rag-token", gen, {"beam_size": 3}).answer(QUESTION, [], hits)
    assert one == greedy
    assert beam.text == "".join(t.text for t in beam.tokens)
    for t in beam.tokens:
        assert sum(t.posterior) == pytest.approx(1.0)
    # beam search maximises Σ log p(y_i|x,y_<i) / length: the same length can only be as likely or more
    if len(beam.tokens) == len(greedy.tokens):
        assert sum(math.log(t.prob) for t in beam.tokens) >= sum(math.log(t.prob) for t in greedy.tokens) - 1e-5


def brute_force_sequence_logprob(gen, prompts, prior, ids):
    """log Σ_z p(z|x) Π_i p(y_i|x,z,y_<i), one unbatched forward pass per token."""
    total = 0.0
    for z, prompt in enumerate(prompts):
        lp = sum(float(logprobs_after(gen, prompt + list(ids[:i]))[t]) for i, t in enumerate(ids))
        total += prior[z] * math.exp(lp)
    return math.log(total)


def test_rag_sequence_thorough_marginal_equals_brute_force(gen, hits):
    own = RagSequenceSettings(decoding="thorough", beams=2, n_best=4)
    config = cfg({"rag-sequence": {"decoding": "thorough", "beams": 2, "n_best": 4}}, max_new_tokens=5)
    answer = load_mode("rag-sequence", gen, config).answer(QUESTION, [], hits)
    prior = [c.prior for c in answer.chunks]
    prompts = build_prompts(gen, QUESTION, [], [chunk_context(h, 2000) for h in hits], config)
    table = hypotheses_per_chunk(gen, prompts, build_prompts(gen, QUESTION, [], [None], config)[0], config, own)
    assert not table.missing()  # thorough: every pair scored
    by_text = {gen.decode([s.token_id for s in h.answer_steps]): h for h in table.hypotheses}
    assert len(answer.n_best) >= 2
    for ranked in answer.n_best:
        ids = by_text[ranked.text].token_ids  # with the final EOS if the hypothesis ended with it
        assert ranked.logprob == pytest.approx(brute_force_sequence_logprob(gen, prompts, prior, ids), abs=1e-3)
        assert sum(ranked.posterior) == pytest.approx(1.0)
    logprobs = [r.logprob for r in answer.n_best]
    assert logprobs == sorted(logprobs, reverse=True)
    assert answer.text == answer.n_best[0].text
    assert [c.posterior for c in answer.chunks] == pytest.approx(list(answer.n_best[0].posterior))
    # the token probabilities factorize the sequence marginal (EOS, not shown as a token, aside)
    assert sum(math.log(t.prob) for t in answer.tokens) >= answer.n_best[0].logprob - 1e-4


def test_rag_sequence_fast_gives_zero_to_chunks_whose_beam_missed_the_answer(gen, hits):
    own = RagSequenceSettings(decoding="fast", beams=2)
    config = cfg({"rag-sequence": {"decoding": "fast", "beams": 2}}, max_new_tokens=5)
    answer = load_mode("rag-sequence", gen, config).answer(QUESTION, [], hits)
    prompts = build_prompts(gen, QUESTION, [], [chunk_context(h, 2000) for h in hits], config)
    table = hypotheses_per_chunk(gen, prompts, build_prompts(gen, QUESTION, [], [None], config)[0], config, own)
    best = next(i for i, h in enumerate(table.hypotheses)
                if gen.decode([s.token_id for s in h.answer_steps]) == answer.text)
    for z, chunk in enumerate(answer.chunks):
        if (best, z) not in table.scored:
            assert chunk.posterior == 0.0
            assert all(t.posterior[z] == 0.0 for t in answer.tokens)
    assert sum(c.posterior for c in answer.chunks) == pytest.approx(1.0)


def test_thorough_and_fast_agree_when_every_beam_produced_every_hypothesis(gen):
    same = tinylm.make_chunks([TEXTS[1]] * 3)
    hits = tinylm.OverlapRetriever(same).search(QUESTION, 3)
    hits = [dataclasses.replace(h, dense_score=s) for h, s in zip(hits, [0.9, 0.5, 0.1])]
    fast = mode("rag-sequence", gen, {"decoding": "fast", "n_best": 4}).answer(QUESTION, [], hits)
    thorough = mode("rag-sequence", gen, {"decoding": "thorough", "n_best": 4}).answer(QUESTION, [], hits)
    assert [r.text for r in fast.n_best] == [r.text for r in thorough.n_best]
    for f, t in zip(fast.n_best, thorough.n_best):
        assert f.logprob == pytest.approx(t.logprob, abs=1e-5)
        assert list(f.posterior) == pytest.approx(list(t.posterior), abs=1e-5)
    # identical chunks explain the answer equally well: the posterior is the prior
    assert [c.posterior for c in fast.chunks] == pytest.approx([c.prior for c in fast.chunks], abs=1e-4)


def test_closed_book_is_the_plain_lm_without_retrieval(gen):
    retriever = tinylm.OverlapRetriever(tinylm.make_chunks(TEXTS))
    engine = DialogueEngine(retriever, gen, cfg())
    answer = engine.ask(QUESTION, mode="closed-book")
    assert retriever.queries == []
    assert answer.chunks == () and all(t.posterior == () for t in answer.tokens)
    ref = plain_greedy(gen, gen.render(messages(cfg().system_prompt, [], QUESTION, None)), 8)
    assert [t.prob for t in answer.tokens] == pytest.approx([p for _, p in ref], abs=1e-4)


def test_concat_is_the_plain_lm_on_all_chunks_in_one_prompt(gen, hits):
    answer = mode("concat", gen).answer(QUESTION, [], hits)
    context = concat_context(hits, QUESTION, cfg())
    assert all(h.chunk.text in context for h in hits)
    ref = plain_greedy(gen, gen.render(messages(cfg().system_prompt, [], QUESTION, context)), 8)
    assert [t.prob for t in answer.tokens] == pytest.approx([p for _, p in ref], abs=1e-4)
    assert all(c.posterior is None for c in answer.chunks)
    assert answer.cited_chunk() == max(answer.chunks, key=lambda c: c.prior)
    assert answer.to_json()["chunks"][0]["posterior"] is None


def test_answer_json_has_exactly_the_documented_keys(gen, hits):
    data = mode("rag-token", gen).answer(QUESTION, [], hits).to_json()
    assert set(data) == {"answer", "mode", "chunks", "tokens"}
    assert data["mode"] == "rag-token"
    assert set(data["chunks"][0]) == {"chunk_id", "source", "start", "end", "text", "score", "prior", "posterior"}
    assert set(data["tokens"][0]) == {"text", "prob", "posterior", "support"}
    assert len(data["tokens"][0]["posterior"]) == 3
    seq = mode("rag-sequence", gen).answer(QUESTION, [], hits).to_json()
    assert set(seq) == {"answer", "mode", "chunks", "tokens", "n_best"}
    assert set(seq["n_best"][0]) == {"text", "logprob", "posterior"}
