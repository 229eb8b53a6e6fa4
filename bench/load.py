"""Load on the packaged models: concurrent HTTP API chats and a continuous stream of searches while a
large ingest runs through the watcher.

    nice .venv/bin/python bench/load.py [--chats 50] [--chars 2000000] [--max-new-tokens 12] [--k 3]
                                        [--parallel 1,8] [--no-write]

The run of tests/test_load.py (same driver, tests/load_driver.py) with the real embedder
(MiniLM-L6, the configured dtype) and generator (SmolLM2-135M, RAG-Token): 25 one-fact documents
with invented names are indexed first; then ``--chars`` characters of the Python 3.11 docs are copied
into the watched folder while ``--chats`` chats (one question per fact, cycling) are sent at once
and two clients search without pause. Each ``--parallel`` value is one arm (``[server] parallel_answers``; 1 = one answer at a time, the
baseline), in a fresh process, one after the other. Reports answers per minute, requests, failures,
p50/p95 latency, answers whose
top chunk was not their own fact's document, the ingest, and the process's peak RSS. Writes the
section "## Load: concurrent chats and searches during ingest" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import DATA, machine, require, write_section

from assistant.config import AnswerConfig, GeneratorConfig
from assistant.generator import Generator
from knowledge.config import KnowledgeConfig
from knowledge.kb import KnowledgeBase
from tests.load_driver import fact_documents, percentile, rss_mb, run_load
from ui.service import Service
from ui.settings import ServerConfig

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


def run_arm(args: argparse.Namespace, parallel: int) -> dict:
    """One arm in this process: a fresh knowledge base, the models, the load; returns its figures."""
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
        server = ServerConfig()
        service = Service(kb, Generator.from_config(GeneratorConfig()),
                          AnswerConfig(k=args.k, max_new_tokens=args.max_new_tokens), 50_000_000,
                          parallel_answers=parallel, batch_rows=server.batch_rows, batch_gather_ms=server.batch_gather_ms)
        try:
            result = run_load(service, facts, ingest, chats=args.chats, search_threads=2, ingest_timeout=1200,
                              chat_timeout=1200)
        finally:
            kb.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    scheduler = service.generator.batching
    return {
        "load_average": os.getloadavg()[1],  # the 5-minute mean at the end of the arm: other processes' load
        "parallel": parallel, "chats": result.chats.summary(), "chat_failures": len(result.chats.failures),
        "p50": percentile(result.chats.latencies, 50), "p95": percentile(result.chats.latencies, 95),
        "chat_seconds": result.chat_seconds, "answers_per_minute": len(result.chats.latencies) / result.chat_seconds * 60,
        "searches": result.searches.summary(), "search_p50": percentile(result.searches.latencies, 50),
        "mixed": len(result.mixed), "mixed_crossed": crossed(result.mixed, facts), "answered": len(result.chats.latencies),
        "search_misses": len(result.search_misses), "search_crossed": crossed(result.search_misses, facts),
        "search_count": len(result.searches.latencies), "ingest_files": result.ingest_files,
        "ingest_chunks": result.ingest_chunks, "ingest_seconds": result.ingest_seconds,
        "rss_before_models": rss_before_models, "rss_start": result.rss_start_mb, "rss_peak": result.rss_peak_mb,
        "peak_running": service.queue.peak_running, "passes": scheduler.passes if scheduler else None,
        "rows_per_step": (scheduler.rows_stepped / max(scheduler.step_passes, 1)) if scheduler else None,
        "examples": [list(m) for m in (result.mixed[:10] + result.search_misses[:10])],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chats", type=int, default=50)
    ap.add_argument("--chars", type=int, default=2_000_000, help="characters of the Python docs to ingest")
    ap.add_argument("--max-new-tokens", type=int, default=12)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--parallel", default=f"1,{ServerConfig().parallel_answers}",
                    help="[server] parallel_answers of each arm, comma-separated (1 = one answer at a time, the "
                         "baseline); each arm runs in a fresh process, one after the other")
    ap.add_argument("--arm", type=int, help=argparse.SUPPRESS)  # internal: run one arm, print its JSON
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.arm is not None:
        print("ARM " + json.dumps(run_arm(args, args.arm)))
        return

    arms = []
    for parallel in [int(p) for p in args.parallel.split(",")]:
        print(f"arm: parallel_answers = {parallel}", flush=True)
        cmd = [sys.executable, __file__, "--arm", str(parallel), "--chats", str(args.chats), "--chars", str(args.chars),
               "--max-new-tokens", str(args.max_new_tokens), "--k", str(args.k)]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        arms.append(json.loads(next(line for line in out.splitlines() if line.startswith("ARM "))[4:]))
        print(arms[-1]["chats"], flush=True)

    base = arms[0]
    rows = ["| `parallel_answers` | answers / minute | vs first | chat p50 (s) | chat p95 (s) | burst (s) | rows per "
            "shared step | search p50 (s) | ingest (s) | peak RSS (MB) | failed |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for a in arms:
        per_step = "–" if a["rows_per_step"] is None else f"{a['rows_per_step']:.1f}"
        rows.append(f"| {a['parallel']} | {a['answers_per_minute']:.1f} | "
                    f"{a['answers_per_minute'] / base['answers_per_minute']:.2f}x | {a['p50']:.1f} | {a['p95']:.1f} | "
                    f"{a['chat_seconds']:.1f} | {per_step} | {a['search_p50']:.2f} | {a['ingest_seconds']:.1f} | "
                    f"{a['rss_peak']:.0f} | {a['chat_failures']} |")
    lines = []
    for a in arms:
        lines += [
            f"- parallel_answers = {a['parallel']}: chats {a['chats']}; searches {a['searches']}; answers whose top "
            f"chunk was not their question's document: {a['mixed']} of {a['answered']} (another question's: "
            f"{a['mixed_crossed']}); searches whose top hit was not: {a['search_misses']} of {a['search_count']} "
            f"(another question's: {a['search_crossed']}); ingest {a['ingest_files']} files, {a['ingest_chunks']:,} "
            f"chunks in {a['ingest_seconds']:.1f} s; RSS {a['rss_before_models']:.0f} MB before the models, "
            f"{a['rss_start']:.0f} MB at the start, peak {a['rss_peak']:.0f} MB; at most {a['peak_running']} "
            f"answers at once; load average (5 min) {a['load_average']:.1f} at its end",
        ]
    print("\n".join(rows + lines))
    for a in arms:
        for question, sources, expected in a["examples"]:
            print(f"  not their document ({a['parallel']}): {question!r} -> {sources}, expected {expected}")
    if not args.no_write:
        write_section(HEADING, f"""`nice .venv/bin/python bench/load.py --chats {args.chats} --chars {args.chars} \
--max-new-tokens {args.max_new_tokens} --k {args.k} --parallel {args.parallel}` ({machine()}).

The app as `footnotes serve` runs it (uvicorn on 127.0.0.1, the watcher in-process), the packaged
models (MiniLM-L6 embeddings, SmolLM2-135M RAG-Token, k = {args.k}, {args.max_new_tokens} new tokens, the
configured precisions). Each arm is a fresh process and data dir: 25 one-fact documents with invented names are
indexed; then {base['ingest_files']} files of the Python docs ({args.chars:,} characters) are copied into the
watched folder while {args.chats} HTTP chat requests are sent at once (a question per fact, cycling) and two
clients search without pause. `parallel_answers = 1` is the baseline (one answer at a time, as before batched
serving); with more, that many answers are generated at once and their rows share forward passes
(assistant/batching.py). The arms ran one after the other on the same machine. The CI version is
tests/test_load.py (fake embedder, tiny LM, 3,000 chunks, under 30 s).

{chr(10).join(rows)}

{chr(10).join(lines)}
""")


if __name__ == "__main__":
    main()
