"""End to end through `footnotes ask`, `chat` and `eval qa` on the packaged real models."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli_knowledge import ROOT, footnotes

pytestmark = pytest.mark.real_models


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("assistant-cli")
    shutil.copytree(ROOT / "sample", base / "kb")
    footnotes("--data-dir", str(base / "data"), "ingest", str(base / "kb"))
    return base / "data"


def test_ask_json_has_provenance_for_every_token(data):
    out = json.loads(footnotes("--data-dir", str(data), "ask", "Where was Marie Curie born?", "--k", "3",
                               "--json").stdout)
    assert out["mode"] == "rag-token" and "Warsaw" in out["answer"]
    assert len(out["chunks"]) == 3
    assert {"chunk_id", "source", "start", "end", "text", "score", "prior", "posterior"} <= set(out["chunks"][0])
    assert abs(sum(c["prior"] for c in out["chunks"]) - 1) < 1e-4
    assert "".join(t["text"] for t in out["tokens"]) == out["answer"]
    for token in out["tokens"]:
        assert len(token["posterior"]) == 3 and abs(sum(token["posterior"]) - 1) < 1e-3
    cited = max(out["chunks"], key=lambda c: c["posterior"])
    assert cited["source"] == "marie-curie.md"


SUMMARY = re.compile(r"^(\d+) of (\d+) content words? supported by your documents"
                     r"(; marked \? came from the model's memory)?$", re.M)


def test_ask_marks_words_from_memory_and_prints_the_support_summary(data):
    """Issue 14: `ask` marks content words no chunk supports ([?word] when stdout is no terminal)
    and prints "N of M content words supported by your documents"; --json has each token's support."""
    question = "Where was Marie Curie born?"
    out = json.loads(footnotes("--data-dir", str(data), "ask", question, "--k", "3", "--json").stdout)
    for token in out["tokens"]:
        assert {"label", "chunk", "pmi", "closed_book", "content"} <= set(token["support"])
        assert token["support"]["label"] in ("document", "model") and len(token["support"]["pmi"]) == 3
    warsaw = [t["support"] for t in out["tokens"] if "War" in t["text"]]
    assert warsaw and warsaw[0]["label"] == "document" and warsaw[0]["content"]  # the answer, from the document

    from ui.support_marks import support_summary, terminal_text

    proc = footnotes("--data-dir", str(data), "ask", question, "--k", "3")
    summary = SUMMARY.search(proc.stdout)
    assert summary, proc.stdout
    expected = support_summary(out["tokens"])  # greedy decoding: the same answer as the --json run
    assert (int(summary[1]), int(summary[2])) == (expected.supported, expected.total)
    assert (summary[3] is not None) == (expected.unsupported > 0)
    lines = proc.stdout.splitlines()
    assert lines[0] == terminal_text(out["tokens"]) and "Warsaw" in lines[0] and "[?Warsaw" not in lines[0]
    assert ("[?" in lines[0]) == (expected.unsupported > 0) and "\x1b[" not in proc.stdout  # no ANSI off a terminal
    assert lines[1] == summary[0] and "marie-curie.md" in proc.stdout


def test_closed_book_answers_mark_every_content_word(data):
    proc = footnotes("--data-dir", str(data), "ask", "Where was Marie Curie born?", "--mode", "closed-book")
    summary = SUMMARY.search(proc.stdout)  # no document behind it: every content word is the model's
    assert summary and int(summary[1]) == 0 and (int(summary[2]) == 0 or "[?" in proc.stdout), proc.stdout


def test_unknown_mode_lists_the_registered_ones(data):
    proc = footnotes("--data-dir", str(data), "ask", "hi", "--mode", "magic", check=False)
    assert proc.returncode == 2
    assert "magic" in proc.stderr and "rag-token" in proc.stderr and "rag-sequence" in proc.stderr


def test_chat_follow_up_uses_the_history(data):
    proc = subprocess.run([sys.executable, "-m", "ui.cli", "--data-dir", str(data), "chat", "--k", "2"],
                          cwd=ROOT, input="Who was Ada Lovelace?\nWhere was she born?\n\n",
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    turns = proc.stdout.split("> ")[1:]  # input() prints its prompt: each turn's answer and citations follow one
    follow_up = turns[1]
    answer = follow_up.split("\n [")[0].split("\n *[")[0]  # the answer text, before its citation lines
    assert "London" in answer, follow_up  # the follow-up's own answer, not the first one's
    assert "ada-lovelace.md" in follow_up


def test_eval_qa_side_by_side(data, tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"id": "1", "question": "Where was Marie Curie born?", "gold": ["marie-curie.md"],
                                   "answers": ["Warsaw"], "original": ["Paris"]}) + "\n")
    out = json.loads(footnotes("--data-dir", str(tmp_path / "d"), "eval", "qa", "--corpus", str(ROOT / "sample"),
                               "--queries", str(queries), "--mode", "rag-token,closed-book", "--k", "2",
                               "--json").stdout)
    assert out["queries"] == 1
    for mode in ("rag-token", "closed-book"):
        assert set(out[mode]) == {"exact_match", "f1", "answer_recall", "citation_accuracy", "leakage",
                                  "support_recall", "memory_caught", "seconds_per_answer"}
    assert out["rag-token"]["answer_recall"] == 1.0 and out["rag-token"]["citation_accuracy"] == 1.0
    # "Warsaw" quoted from the gold chunk: every token of it is labelled "document" with that chunk
    assert out["rag-token"]["support_recall"] == 1.0 and out["rag-token"]["leakage"] == 0.0
    # closed-book labels every token "model": whatever it says, nothing counts as supported
    assert out["closed-book"]["support_recall"] in (0.0, None)
    assert out["closed-book"]["memory_caught"] in (1.0, None)
