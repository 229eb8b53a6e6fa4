"""Contract tests of the REALM reader mode: spans are text of their chunk (and of their source
document at the reported offsets), the marginal equals a brute-force sum, equal answers merge,
a low marginal says "no answer", and the QA-model reader finds spans in later windows."""

import json
import math
import random

import pytest
import torch

from assistant.answer import Answer
from assistant.config import AnswerConfig, ModeTables
from assistant.engine import DialogueEngine, load_mode, mode_names
from assistant.lockstep import left_pad
from assistant.marginals import retrieval_prior
from assistant.modes.base import AnswerMode, prior_scores
from assistant.modes.realm import NO_ANSWER, RealmMode, answer_tokens
from assistant.prompts import messages
from assistant.reader import GeneratorReader, HFQAReader, Reader, SpanCandidate, candidate
from assistant.reader.align import aligned_spans, answer_words
from assistant.reader.hf_qa import span_logprobs
from assistant.reader.marginal import (
    ChunkSpan,
    marginalize_spans,
    normalize_span_text,
    realm_answer_logprobs,
    realm_marginal,
)
from knowledge.types import Chunk, Hit
from tests import tinylm

TEXTS = tinylm.FACTS
QUESTION = tinylm.QUESTION


@pytest.fixture(scope="module")
def gen():
    return tinylm.make_generator()


def cfg(realm=None, **kw):
    """Shared settings ``kw``; ``realm``: the [answer.realm] table (threshold = 0 unless given)."""
    tables = {"realm": {"threshold": 0.0, **(realm or {})}}
    return AnswerConfig(**{"k": 3, "prior_score": "uniform", **kw}, modes=ModeTables(tables))


class TableReader:
    """Test double for the reader: fixed (text, probability) spans per chunk, found by text search."""

    def __init__(self, table):
        self.table = table  # per chunk: [(span text, p(s|z,x)), ...]
        self.calls = []

    def read(self, question, chunk_texts):
        self.calls.append((question, list(chunk_texts)))
        out = []
        for text, spans in zip(chunk_texts, self.table):
            found, offset = [], 0
            for span, p in spans:
                start = text.index(span, offset)
                found.append(candidate(text, start, start + len(span), math.log(p)))
            out.append(tuple(found))
        return out


def hits_of(texts, starts=None, scores=None):
    starts = starts or [0] * len(texts)
    scores = scores or [0.0] * len(texts)
    return [Hit(Chunk(f"c{i}", f"doc{i}.md", s, s + len(t), t), sc, dense_score=sc)
            for i, (t, s, sc) in enumerate(zip(texts, starts, scores))]


# -- marginalisation -------------------------------------------------------------------------------
def brute_force(spans, prior):
    """p(y|x) = Σ_z p(z|x) Σ_{s ∈ z, text(s) = y} p(s|z,x), the slow obvious way."""
    out = {}
    for z, p_z in enumerate(prior):
        for s in spans:
            if s.chunk == z:
                key = " ".join(s.text.split()).lower()
                out[key] = out.get(key, 0.0) + p_z * math.exp(s.logprob)
    return out


def test_marginal_equals_a_brute_force_loop():
    rng = random.Random(0)
    words = ["Warsaw", "warsaw", " WARSAW ", "London", "the  first program", "The first\nprogram", "radium"]
    spans = [ChunkSpan(rng.randrange(4), i, i + 1, rng.choice(words), math.log(rng.uniform(0.01, 0.3)))
             for i in range(30)]
    prior = torch.log_softmax(torch.randn(4), dim=0)
    ranked = marginalize_spans(spans, prior)
    expected = brute_force(spans, prior.exp().tolist())
    assert {normalize_span_text(a.text): math.exp(a.logprob) for a in ranked} == pytest.approx(expected)
    assert [a.logprob for a in ranked] == sorted((a.logprob for a in ranked), reverse=True)
    for a in ranked:
        assert sum(a.posterior) == pytest.approx(1.0)
        assert sum(share for _, share in a.spans) == pytest.approx(math.exp(a.logprob))
        assert a.text == a.spans[0][0].text  # the original text of the largest span, for display
        for z in range(4):  # p(z|x,y) = p(z|x) p(y|z,x) / p(y|x)
            mine = sum(share for s, share in a.spans if s.chunk == z)
            assert a.posterior[z] == pytest.approx(mine / math.exp(a.logprob))


def test_answer_table_is_minus_inf_where_a_chunk_lacks_the_answer():
    table = realm_answer_logprobs(torch.log(torch.tensor([0.2, 0.3, 0.5])), torch.tensor([0, 0, 2]),
                                  torch.tensor([1, 1, 0]), 2, 3)
    assert table.shape == (2, 3)
    assert math.exp(table[1, 0]) == pytest.approx(0.5)  # two spans of chunk 0 with answer 1
    assert math.exp(table[0, 2]) == pytest.approx(0.5)
    assert torch.isinf(table[0, 0]) and torch.isinf(table[1, 1]) and torch.isinf(table[1, 2])
    assert realm_marginal(table, torch.log(torch.tensor([0.5, 0.25, 0.25])))[1].exp() == pytest.approx(0.25)


def test_equal_answers_from_different_chunks_are_merged(gen):
    # alone, "london" (0.39 from chunk 0) beats each Warsaw span (0.26, 0.21); merged, Warsaw has 0.47
    texts = [TEXTS[0], TEXTS[1], TEXTS[2].replace("london", "Warsaw")]
    reader = TableReader([[("london", 0.9)], [("warsaw", 0.9)], [("Warsaw", 0.75)]])
    hits = hits_of(texts, scores=[math.log(0.5), math.log(1 / 3), math.log(1 / 3)])
    config = cfg(prior_score="dense", prior_temperature=1.0)
    answer = RealmMode(gen, config, reader).answer(QUESTION, [], hits)
    prior = retrieval_prior(prior_scores(hits, "dense"), 1.0).exp().tolist()
    warsaw = prior[1] * 0.9 + prior[2] * 0.75
    assert normalize_span_text(answer.text) == "warsaw"
    assert math.exp(answer.n_best[0].logprob) == pytest.approx(warsaw)
    assert math.exp(answer.n_best[1].logprob) == pytest.approx(prior[0] * 0.9)
    assert {s.chunk_id for s in answer.spans} == {"c1", "c2"}
    assert sum(s.prob for s in answer.spans) == pytest.approx(warsaw)
    assert [c.posterior for c in answer.chunks] == pytest.approx([0.0, prior[1] * 0.9 / warsaw, prior[2] * 0.75 / warsaw])
    assert [t.prob for t in answer.tokens] == pytest.approx([warsaw] * len(answer.tokens))


def test_threshold_says_no_answer_and_never_guesses(gen):
    hits = hits_of(TEXTS)
    reader = TableReader([[("london", 0.2)], [("warsaw", 0.3)], [("mathematician", 0.1)]])
    answer = RealmMode(gen, cfg({"threshold": 0.2}), reader).answer(QUESTION, [], hits)
    assert answer.text == NO_ANSWER == "I could not find this in your documents."
    assert answer.spans == () and "spans" not in answer.to_json()
    assert answer.text == "".join(t.text for t in answer.tokens)
    assert all(c.posterior is None for c in answer.chunks)
    assert [r.text for r in answer.n_best] == ["warsaw", "london", "mathematician"]  # what was considered
    below = RealmMode(gen, cfg({"threshold": 0.09}), reader).answer(QUESTION, [], hits)
    assert below.text == "warsaw"  # best p(y|x) = 0.1 with a uniform prior
    empty = RealmMode(gen, cfg(), TableReader([[], [], []])).answer(QUESTION, [], hits)
    assert empty.text == NO_ANSWER and empty.n_best == ()


def test_spans_are_reported_in_source_document_offsets(gen):
    documents = {f"doc{i}.md": "# Title\n\n" + "intro words " * (i + 3) + text for i, text in enumerate(TEXTS)}
    starts = [len(documents[f"doc{i}.md"]) - len(text) for i, text in enumerate(TEXTS)]
    hits = hits_of(TEXTS, starts)
    reader = TableReader([[("london", 0.4)], [("warsaw", 0.2), ("radium", 0.1)], [("london", 0.4)]])
    answer = RealmMode(gen, cfg(), reader).answer(QUESTION, [], hits)
    aj = json.loads(json.dumps(answer.to_json()))
    assert aj["answer"] == "london" and aj["mode"] == "realm"
    assert len(aj["spans"]) == 2
    for span in aj["spans"]:
        assert set(span) >= {"chunk_id", "source", "start", "end", "prob"}
        assert documents[span["source"]][span["start"] : span["end"]] == aj["answer"]
    assert [n["text"] for n in aj["n_best"]] == ["london", "warsaw", "radium"]
    assert all(len(t["posterior"]) == 3 for t in aj["tokens"])


def test_reader_spans_that_are_not_chunk_text_are_refused(gen):
    class Liar:
        def read(self, question, chunk_texts):
            return [(SpanCandidate(0, 3, "xyz", 0.0),) for _ in chunk_texts]

    with pytest.raises(ValueError, match="not the text of chunk"):
        RealmMode(gen, cfg(), Liar()).answer(QUESTION, [], hits_of(TEXTS))
    with pytest.raises(ValueError, match="not inside"):
        candidate("abc", 2, 9, 0.0)


def test_answer_tokens_concatenate_to_the_text(gen):
    for text in ("marie curie was born in warsaw", "  spaced   out ", "x"):
        tokens = answer_tokens(gen.tokenizer, text, 0.5, (0.25, 0.75))
        assert "".join(t.text for t in tokens) == text
        assert all(t.prob == 0.5 and t.posterior == (0.25, 0.75) for t in tokens)
    assert len(answer_tokens(gen.tokenizer, "marie curie was born", 1.0, ())) == 4


# -- the mode in the engine, with the default (generator) reader --------------------------------------
def test_realm_is_registered_and_follows_the_protocol(gen):
    assert "realm" in mode_names()
    mode = load_mode("realm", gen, cfg())
    reader = mode.reader(mode.defaults())
    assert isinstance(mode, AnswerMode) and isinstance(reader, GeneratorReader)
    assert isinstance(reader, Reader) and reader.max_answer_tokens == 16


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_every_answer_is_text_of_a_retrieved_chunk_or_no_answer(gen, threshold):
    engine = DialogueEngine(tinylm.OverlapRetriever(tinylm.make_chunks(TEXTS)), gen,
                            cfg({"threshold": threshold, "max_answer_tokens": 6}, mode="realm"))
    for question in (QUESTION, "who wrote the first program ?", "what did marie curie discover ?"):
        items = list(engine.stream(question))
        answer = items[-1]
        assert isinstance(answer, Answer) and tuple(items[:-1]) == answer.tokens
        assert answer.text == "".join(t.text for t in answer.tokens)
        if answer.text == NO_ANSWER:
            assert answer.spans == ()
            continue
        assert answer.spans and all(s.text == answer.text or normalize_span_text(s.text) == normalize_span_text(answer.text)
                                    for s in answer.spans)
        by_id = {c.chunk_id: c for c in answer.chunks}
        for s in answer.spans:
            chunk = by_id[s.chunk_id]
            assert chunk.text[s.start - chunk.start : s.end - chunk.start] == s.text


# -- the generator reader ---------------------------------------------------------------------------
def test_alignment_drops_the_question_words_before_aligning():
    text = TEXTS[1]
    answer = "Marie Curie was born in Warsaw."
    best = aligned_spans(answer, QUESTION, text, 8, 3)[0]
    assert text[best.start : best.end] == "warsaw" and best.f1 == 1.0
    assert answer_words(answer, QUESTION) == {"warsaw": 1}
    # nothing but question words: the answer's content words are aligned instead
    only_question = aligned_spans("marie curie", QUESTION, text, 8, 1)[0]
    assert text[only_question.start : only_question.end] == "marie curie"
    assert aligned_spans("?", QUESTION, text, 8, 3) == []


def test_alignment_prefers_the_best_f1_then_the_shortest_span():
    text = "radium and polonium were isolated ; polonium first , radium later"
    spans = aligned_spans("She found radium and polonium.", "what did marie find ?", text, 8, 4)
    assert text[spans[0].start : spans[0].end] == "radium and polonium"
    assert spans[0].f1 == pytest.approx(2 * 2 / (2 + 3))  # "found" is not in the text
    assert [s.f1 for s in spans] == sorted((s.f1 for s in spans), reverse=True)
    assert aligned_spans("radium and polonium", "", text, 2, 1)[0].f1 < 1.0  # the span limit holds


def test_generator_reader_scores_each_span_as_the_whole_answer(gen):
    reader = GeneratorReader(gen, max_answer_tokens=6, spans_per_chunk=2)
    original = reader.generate
    reader.generate = lambda prompts, q: (["she was born in warsaw", "london", "nothing here"], original(prompts, q)[1])
    texts = [TEXTS[1], TEXTS[0], TEXTS[2]]
    result = reader.read(QUESTION, texts)
    assert [c.text for c in result[0]][:1] == ["warsaw"] and [c.text for c in result[1]][:1] == ["london"]
    assert result[2] == ()  # "nothing here" has no word of that chunk
    for z, spans in enumerate(result):
        prompt = gen.render(messages(reader.system_prompt, (), QUESTION, texts[z]))
        for c in spans:
            assert texts[z][c.start : c.end] == c.text
            ids = gen.tokenizer(c.text, add_special_tokens=False)["input_ids"] + [reader.end_id]
            with torch.no_grad():
                logits = gen.model(input_ids=torch.tensor([prompt + ids])).logits[0].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            brute = sum(float(logprobs[len(prompt) - 1 + i, t]) for i, t in enumerate(ids))
            assert c.logprob == pytest.approx(brute, abs=1e-3)


def test_generator_reader_batches_like_single_prompts(gen):
    reader = GeneratorReader(gen, max_answer_tokens=5)
    prompts = [gen.render(messages(reader.system_prompt, (), QUESTION, t)) for t in TEXTS]
    together, _ = reader.generate(prompts, QUESTION)
    assert together == [reader.generate([p], QUESTION)[0][0] for p in prompts]
    assert left_pad(prompts, gen.pad_id)[0].shape[0] == 3


# -- the question-answering model reader -----------------------------------------------------------
QA_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + tinylm.WORDS


def qa_tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(dict.fromkeys(QA_WORDS))})


def qa_model(vocab_size, layers=2, seed=0):
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128)
    return BertForQuestionAnswering(config).eval()


def pointing_model(tokenizer, word):
    """A QA model whose start and end logits peak on one word wherever it is: no layers, the word's
    embedding alone along the axis the QA head reads, other embeddings off that axis."""
    model = qa_model(len(tokenizer.get_vocab()), layers=0)
    with torch.no_grad():
        emb = model.bert.embeddings
        emb.position_embeddings.weight.zero_()
        emb.token_type_embeddings.weight.zero_()
        emb.word_embeddings.weight[:, 0] = 0.0
        emb.word_embeddings.weight[tokenizer.convert_tokens_to_ids(word), 0] = 50.0
        model.qa_outputs.weight.zero_()
        model.qa_outputs.weight[:, 0] = 5.0
        model.qa_outputs.bias.zero_()
    return model


def test_qa_reader_spans_are_text_of_the_chunk_and_a_distribution():
    tok = qa_tokenizer()
    reader = HFQAReader(qa_model(len(tok.get_vocab())), tok, max_answer_tokens=4, window_tokens=32, stride=8, top_spans=50)
    text = TEXTS[1] + " . " + TEXTS[0] + " , with Unknown Words here"
    (spans,) = reader.read(QUESTION, [text])
    assert len(spans) == 50
    for s in spans:
        assert text[s.start : s.end] == s.text and s.text.strip() == s.text
        assert len(tok(s.text, add_special_tokens=False)["input_ids"]) <= 4
    assert sum(math.exp(s.logprob) for s in spans) <= 1.0 + 1e-6
    assert [s.logprob for s in spans] == sorted((s.logprob for s in spans), reverse=True)
    assert len({(s.start, s.end) for s in spans}) == 50
    assert reader.read(QUESTION, ["", TEXTS[0]])[0] == ()


def test_qa_reader_windows_a_long_chunk_and_finds_spans_in_later_windows():
    tok = qa_tokenizer()
    reader = HFQAReader(pointing_model(tok, "polonium"), tok, max_answer_tokens=3, window_tokens=32, stride=8)
    text = " ".join(["alpha beta gamma delta"] * 30) + " she discovered polonium in paris"
    assert len(reader._windows(QUESTION, text)["input_ids"]) > 5
    (spans,) = reader.read(QUESTION, [text])
    best = spans[0]
    assert (best.start, best.end, best.text) == (text.index("polonium"), text.index("polonium") + 8, "polonium")
    assert best.start > 500 and math.exp(best.logprob) > 0.9


def test_span_logprobs_equal_a_brute_force_loop_over_windows():
    gen_ = torch.Generator().manual_seed(0)
    w, t = 2, 7
    start, end = torch.randn(w, t, generator=gen_), torch.randn(w, t, generator=gen_)
    context = torch.tensor([[0, 1, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    # token i of window 0 covers chars 2i..2i+1; window 1 starts at the 3rd chunk token (overlap of 3)
    offsets = torch.zeros(w, t, 2, dtype=torch.long)
    for i in range(1, 6):
        offsets[0, i] = torch.tensor([2 * (i - 1), 2 * (i - 1) + 1])
    for i in range(1, 5):
        offsets[1, i] = torch.tensor([2 * (i + 1), 2 * (i + 1) + 1])
    scores = {}
    for win in range(w):
        for a in range(t):
            for b in range(a, min(a + 3, t)):
                if context[win, a] and context[win, b]:
                    key = (int(offsets[win, a, 0]), int(offsets[win, b, 1]))
                    scores[key] = max(scores.get(key, -math.inf), float(start[win, a] + end[win, b]))
    norm = math.log(sum(math.exp(v) for v in scores.values()))
    got = span_logprobs(start, end, context, offsets, 3, 100)
    assert {(s, e): lp for s, e, lp in got} == pytest.approx({k: v - norm for k, v in scores.items()})


def test_source_text_at_the_reported_offsets_is_exactly_the_answer(folder, open_kb, gen):
    """Real files through the knowledge pipeline (fake embedder), the QA reader pointing at "polonium"."""
    filler = "\n\n".join(f"## Part {i}\n\n" + "alpha beta gamma delta epsilon " * 12 for i in range(4))
    (folder / "curie.md").write_text(f"# Curie\n\n{filler}\n\n## Discoveries\n\nShe discovered Polonium in Paris.\n")
    (folder / "notes.txt").write_text("The polonium sample was kept in a lead box.\n\nNothing else here.\n")
    kb = open_kb()
    kb.sync()
    engine = DialogueEngine(kb.retriever, gen, cfg(k=3))
    hits = engine.retrieve("who discovered polonium ?")
    assert any(h.chunk.start > 0 for h in hits)
    tok = qa_tokenizer()
    reader = HFQAReader(pointing_model(tok, "polonium"), tok, max_answer_tokens=3, window_tokens=32, stride=8)
    answer = RealmMode(gen, cfg(k=3), reader).answer("who discovered polonium ?", [], hits)
    assert normalize_span_text(answer.text) == "polonium"
    assert {s.source for s in answer.spans} == {"curie.md", "notes.txt"}  # merged across documents
    for span in answer.to_json()["spans"]:
        source = (folder / span["source"]).read_text(encoding="utf-8")
        assert source[span["start"] : span["end"]] == span["text"]
        assert normalize_span_text(span["text"]) == normalize_span_text(answer.text)
    assert sum(s.prob for s in answer.spans) == pytest.approx(math.exp(answer.n_best[0].logprob))


# -- the packaged generator as the reader --------------------------------------------------------------
INVENTED = [  # invented facts: the model cannot know them without the chunks
    "The Zorblax Festival is held every year in the town of Quillhaven. It was founded in 1873 by the brewer Henrietta Malvern.",
    "Quillhaven is a small fishing town on the northern coast. Its harbour was rebuilt after the storm of 1921.",
    "The Malvern brewery produced a dark ale called Midnight Anchor, which is still sold today.",
]


@pytest.mark.real_models
def test_packaged_generator_reads_verbatim_answers_from_the_right_chunk():
    """SmolLM2-135M as the reader: every answer is a span of a retrieved chunk at the reported
    offsets (or "no answer"), and a fact stated in one chunk is extracted from that chunk."""
    from assistant.config import GeneratorConfig
    from assistant.generator import Generator

    real = Generator.from_config(GeneratorConfig())
    engine = DialogueEngine(tinylm.OverlapRetriever(tinylm.make_chunks(INVENTED)), real,
                            cfg(mode="realm", prior_score="dense"))
    questions = ["In which year was the Zorblax Festival founded?", "What ale did the Malvern brewery produce?",
                 "After which storm was the harbour of Quillhaven rebuilt?"]
    answers = [engine.ask(q) for q in questions]
    for answer in answers:
        assert answer.spans and answer.text != NO_ANSWER
        for s in answer.spans:
            assert INVENTED[int(s.source[3])][s.start : s.end] == s.text
            assert normalize_span_text(s.text) == normalize_span_text(answer.text)
        assert math.exp(answer.n_best[0].logprob) == pytest.approx(sum(s.prob for s in answer.spans))
    founded = answers[0]
    assert "1873" in founded.text and founded.cited_chunk().source == "doc0.md"
    strict = DialogueEngine(engine.retriever, real, cfg({"threshold": 0.5}, mode="realm", prior_score="dense"))
    assert strict.ask(questions[0]).text == NO_ANSWER  # p(y|x) of a bare span is far below 0.5 for this generator
