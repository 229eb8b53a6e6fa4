"""QA metrics by hand, the query file format, and evaluate_qa's report shape."""

import json

import pytest

from assistant.answer import Answer, RetrievedChunk
from assistant.qa_eval import (
    QAQuery,
    answer_recall,
    citation_accuracy,
    evaluate_qa,
    exact_match,
    load_queries,
    normalize_answer,
    token_f1,
)
from knowledge.errors import ConfigError


def chunk(source, prior, posterior):
    return RetrievedChunk("id-" + source, source, 0, 1, "t", (), 0.5, prior, posterior)


def test_squad_normalisation():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("An apple, a pear.") == "apple pear"


def test_exact_match():
    assert exact_match("the Warsaw.", ["Warsaw", "Paris"]) == 1.0
    assert exact_match("in Warsaw", ["Warsaw"]) == 0.0
    assert exact_match("anything", []) == 0.0


def test_token_f1_by_hand():
    # prediction "born in warsaw poland" vs "warsaw poland": common 2, P = 2/4, R = 2/2, F1 = 2/3
    assert token_f1("born in Warsaw, Poland", ["Warsaw Poland"]) == pytest.approx(2 / 3)
    assert token_f1("Warsaw", ["Paris", "warsaw"]) == 1.0
    assert token_f1("London", ["Warsaw"]) == 0.0
    assert token_f1("the", ["a"]) == 1.0  # both normalise to nothing


def test_answer_recall_is_a_case_insensitive_substring():
    assert answer_recall("She was born in WARSAW in 1867.", ["warsaw"]) == 1.0
    assert answer_recall("She was born in Paris.", ["warsaw", "1867"]) == 0.0


def test_citation_accuracy_uses_the_highest_posterior_then_the_prior():
    cited = Answer("x", "rag-token", (chunk("a.md", 0.7, 0.2), chunk("./b/c.md", 0.3, 0.8)))
    assert citation_accuracy(cited, ["b/c.md"]) == 1.0
    assert citation_accuracy(cited, ["a.md"]) == 0.0
    concat = Answer("x", "concat", (chunk("a.md", 0.7, None), chunk("b.md", 0.3, None)))
    assert citation_accuracy(concat, ["a.md"]) == 1.0
    assert citation_accuracy(Answer("x", "closed-book"), ["a.md"]) == 0.0


def test_load_queries(tmp_path):
    path = tmp_path / "q.jsonl"
    rows = [{"id": "1", "question": "q1?", "gold": ["a.md"], "answers": ["x"]}, {"id": "2", "question": "q2?"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert load_queries(path) == [QAQuery("1", "q1?", ("a.md",), ("x",)), QAQuery("2", "q2?")]
    path.write_text('{"id": "1", "question": "q", "answers": "x"}\n')
    with pytest.raises(ConfigError, match="q.jsonl:1"):
        load_queries(path)


class ScriptedEngine:
    """Test double for the engine: a fixed answer per (mode, question)."""

    def __init__(self, answers):
        self.answers = answers

    def ask(self, question, history=(), mode=None, k=None):
        return self.answers[(mode, question)]


def test_evaluate_qa_report():
    queries = [QAQuery("1", "q1", ("a.md",), ("warsaw",)), QAQuery("2", "q2", ("b.md",), ())]
    good = {("m", "q1"): Answer("Warsaw", "m", (chunk("a.md", 1.0, 1.0),)),
            ("m", "q2"): Answer("?", "m", (chunk("a.md", 1.0, 1.0),))}
    bad = {("n", "q1"): Answer("Paris", "n"), ("n", "q2"): Answer("?", "n")}
    result = evaluate_qa(ScriptedEngine({**good, **bad}), queries, ["m", "n"])
    assert result.queries == 2 and [mode for mode, _ in result.modes] == ["m", "n"]
    assert result.metrics("m").exact_match == 1.0 and result.metrics("n").f1 == 0.0
    report = result.to_json()  # what `footnotes eval qa --json` prints
    assert report["queries"] == 2
    assert report["m"]["exact_match"] == 1.0 and report["m"]["f1"] == 1.0 and report["m"]["answer_recall"] == 1.0
    assert report["m"]["citation_accuracy"] == 0.5  # q2's gold is b.md
    assert report["n"] == {**report["n"], "exact_match": 0.0, "citation_accuracy": 0.0}
    assert set(report["m"]) == {"exact_match", "f1", "answer_recall", "citation_accuracy", "leakage", "support_recall",
                                "memory_caught", "seconds_per_answer"}
    assert report["m"]["seconds_per_answer"] >= 0.0
    json.dumps(report)
