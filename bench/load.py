"""Load on the packaged models: concurrent HTTP API chats and a continuous stream of searches while a
large ingest runs through the watcher.

    nice .venv/bin/python bench/load.py [--chats 50] [--chars 2000000] [--max-new-tokens 12] [--k 3] [--no-write]

The run of tests/test_load.py (same driver, tests/load_driver.py) with the real embedder
(MiniLM-L6, the configured dtype) and generator (SmolLM2-135M, RAG-Token): 25 one-fact documents
with invented names are indexed first; then ``--chars`` characters of the Python 3.11 docs are copied
into the watched folder while ``--chats`` chats (one question per fact, cycling) are sent at once
and two clients search without pause. Reports requests, failures, p50/p95 latency, answers whose
top chunk was not their own fact's document, the ingest, and the process's peak RSS. Writes the
section "## Load: concurrent chats and searches during ingest" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from common import DATA, machine, require, write_section

from assistant.config import AnswerConfig, GeneratorConfig
from assistant.generator import Generator
from knowledge.config import KnowledgeConfig
from knowledge.kb import KnowledgeBase
from tests.load_driver import fact_documents, rss_mb, run_load
from ui.service import Service

HEADING = "## Load: concurrent chats and searches during ingest"


def docs_to_ingest(chars: int) -> dict[str, str]:
    """.rst.txt files of the Python docs (sorted by path) up to ``chars`` characters, as ``{name: text}``."""
    root = require(DATA / "pydocs")
    out, total = {}, 0
    for p in sorted(root.rglob("*.rst.txt")):
        if total >= chars:
            break
        out[f"pydocs/{p.relative_to(root).as_posix()}"] = text = p.read_text(encoding="utf-8")
        total += len(text)
    return out


def crossed(misses: list[tuple[str, list[str], str]], facts: dict) -> int:
    """How many misses had another question's fact document on top (answers mixed between questions)."""
    return sum(1 for _, sources, expected in misses if sources and sources[0] in facts and sources[0] != expected)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chats", type=int, default=50)
    ap.add_argument("--chars", type=int, default=2_000_000, help="characters of the Python docs to ingest")
    ap.add_argument("--max-new-tokens", type=int, default=12)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="footnotes-load-"))
    try:
        folder = work / "knowledge"
        folder.mkdir()
        facts = fact_documents(25)
        for name, (_, text) in facts.items():
            (folder / name).write_text(text)
        ingest = docs_to_ingest(args.chars)
        rss_before_models = rss_mb()
        kb = KnowledgeBase.open(KnowledgeConfig(), work / "data", folder=folder)
        kb.sync()
        service = Service(kb, Generator.from_config(GeneratorConfig()),
                          AnswerConfig(k=args.k, max_new_tokens=args.max_new_tokens), 50_000_000)
        try:
            result = run_load(service, facts, ingest, chats=args.chats, search_threads=2, ingest_timeout=1200,
                              chat_timeout=1200)
        finally:
            kb.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        f"- chats: {result.chats.summary()}; the burst of {args.chats} took {result.chat_seconds:.1f} s "
        "(one generation at a time: later chats wait in the queue)",
        f"- searches during the run: {result.searches.summary()}",
        f"- chat answers whose top chunk was not their question's document: {len(result.mixed)} of "
        f"{len(result.chats.latencies)} (another question's document: {crossed(result.mixed, facts)}); searches "
        f"whose top hit was not: {len(result.search_misses)} of {len(result.searches.latencies)} (another "
        f"question's document: {crossed(result.search_misses, facts)})",
        f"- ingest: {result.ingest_files} files, {result.ingest_chunks:,} chunks indexed by the watcher in "
        f"{result.ingest_seconds:.1f} s (from the first file written to the last indexed)",
        f"- memory (RSS of the one process: server, watcher, models): {rss_before_models:.0f} MB before the models, "
        f"{result.rss_start_mb:.0f} MB at the start of the run, peak {result.rss_peak_mb:.0f} MB",
    ]
    print("\n".join(lines))
    for question, sources, expected in result.mixed[:10] + result.search_misses[:10]:
        print(f"  not their document: {question!r} -> {sources}, expected {expected}")
    if not args.no_write:
        write_section(HEADING, f"""`nice .venv/bin/python bench/load.py --chats {args.chats} --chars {args.chars} \
--max-new-tokens {args.max_new_tokens} --k {args.k}` ({machine()}).

The app as `footnotes serve` runs it (uvicorn on 127.0.0.1, the watcher in-process), the packaged
models (MiniLM-L6 embeddings, SmolLM2-135M RAG-Token, k = {args.k}, {args.max_new_tokens} new tokens).
25 one-fact documents with invented names are indexed; then {result.ingest_files} files of the Python
docs ({args.chars:,} characters) are copied into the watched folder while {args.chats} HTTP chat requests
are sent at once (a question per fact, cycling) and two clients search without pause. The CI version is tests/test_load.py (fake
embedder, tiny LM, 3,000 chunks, under 30 s).

{chr(10).join(lines)}
""")


if __name__ == "__main__":
    main()
