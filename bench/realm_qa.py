"""REALM reader vs RAG on extractive factoid questions over the Python docs.

    .venv/bin/python bench/realm_qa.py                      # realm and rag-token, k = 3, prints a table
    .venv/bin/python bench/realm_qa.py --write              # ... and writes docs/benchmarks.md's section

The corpus is the Python 3.11 docs (``.dev-data/pydocs``, see docs/evaluation.md); the questions
(bench/data/pydocs_factoid.jsonl) were written by hand from the files, each answer verbatim text
of its gold file. Metrics are those of ``footnotes eval qa`` (assistant.qa_eval.evaluate_qa), plus
for realm: how many answers are verbatim text of a retrieved chunk, how often it said "no answer",
and exact match against the share answered for several thresholds (from the same run).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common import Recorder, write_section  # noqa: E402

HEADING = "## REALM reader vs RAG on factoid questions"
THRESHOLDS = (0.0, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5)


def verbatim(answer) -> bool:
    """The answer is the text of each of its spans, and each span is its chunk's text at the offsets."""
    chunks = {c.chunk_id: c for c in answer.chunks}
    return bool(answer.spans) and all(
        s.text == chunks[s.chunk_id].text[s.start - chunks[s.chunk_id].start : s.end - chunks[s.chunk_id].start]
        and " ".join(s.text.split()).casefold() == " ".join(answer.text.split()).casefold()
        for s in answer.spans
    )


def realm_details(answers, queries) -> dict:
    from assistant.modes.realm import NO_ANSWER
    from assistant.qa_eval import exact_match

    answered = [a for a in answers if a.text != NO_ANSWER]
    sweep = []
    for t in THRESHOLDS:
        kept = [(a, q) for a, q in zip(answers, queries) if a.n_best and math.exp(a.n_best[0].logprob) >= t]
        em = sum(exact_match(a.n_best[0].text, q.answers) for a, q in kept)
        sweep.append({"threshold": t, "answered": len(kept) / len(queries), "exact_match": em / len(queries),
                      "exact_match_of_answered": em / len(kept) if kept else None})
    return {"no_answer": 1 - len(answered) / len(queries),
            "verbatim": sum(verbatim(a) for a in answered) / len(answered) if answered else None,
            "sweep": sweep}


def retrieval_recall(answers, queries) -> float:
    return sum(any(c.source in q.gold for c in a.chunks) for a, q in zip(answers, queries)) / len(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(ROOT / ".dev-data" / "pydocs"))
    parser.add_argument("--queries", default=str(ROOT / "bench" / "data" / "pydocs_factoid.jsonl"))
    parser.add_argument("--modes", default="realm,rag-token")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="first N questions only (0 = all)")
    parser.add_argument("--data-dir", help="knowledge data dir (default: the one `footnotes eval qa` uses)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on 2 shared cores)")
    parser.add_argument("--answer", default="{}", help='JSON of [answer] settings, with a table per mode, e.g. '
                                                       '\'{"realm": {"threshold": 0.001}}\'')
    parser.add_argument("--write", action="store_true", help=f"write the section '{HEADING}' of docs/benchmarks.md")
    args = parser.parse_args()

    import torch

    from assistant.config import GeneratorConfig, parse_answer
    from assistant.modes.base import own_settings
    from assistant.modes.realm import RealmMode
    from assistant.engine import DialogueEngine
    from assistant.generator import Generator
    from assistant.qa_eval import evaluate_qa, load_queries
    from knowledge.config import KnowledgeConfig
    from knowledge.kb import KnowledgeBase
    from ui.commands.evaluation import corpus_data_dir
    from ui.settings import default_data_dir

    torch.set_num_threads(args.threads)
    corpus = Path(args.corpus)
    if not corpus.is_dir():
        sys.exit(f"{corpus} is missing: docs/evaluation.md says where the development data comes from")
    queries = load_queries(args.queries)[: args.limit or None]
    modes = [m for m in args.modes.split(",") if m]
    data_dir = Path(args.data_dir) if args.data_dir else corpus_data_dir(default_data_dir(), corpus)
    kb = KnowledgeBase.open(KnowledgeConfig(), data_dir, folder=corpus)
    kb.sync()
    try:
        config = parse_answer({"k": args.k, **json.loads(args.answer)}, "--answer")
        engine = Recorder(DialogueEngine(kb.retriever, Generator.from_config(GeneratorConfig()), config))
        report = evaluate_qa(engine, queries, modes, args.k).to_json()
    finally:
        kb.close()
    for mode in modes:
        report[mode]["retrieval_recall"] = retrieval_recall(engine.answers[mode], queries)
    if "realm" in modes:
        report["realm_details"] = realm_details(engine.answers["realm"], queries)
        report["realm_answers"] = [[q.id, a.text, q.answers[0]] for q, a in zip(queries, engine.answers["realm"])]
    realm = own_settings(RealmMode, config)
    report["settings"] = {"k": args.k, "realm_threshold": realm.threshold, "realm_reader": realm.reader,
                          "realm_max_answer_tokens": realm.max_answer_tokens, "threads": args.threads}
    print(json.dumps(report, indent=1))
    table = markdown(report, modes, args)
    print(table)
    if args.write:
        write_section(HEADING, table)


def markdown(report: dict, modes: list[str], args) -> str:
    def f(v):
        return "–" if v is None else f"{v:.3f}"

    lines = [
        f"`.venv/bin/python bench/realm_qa.py{' --limit ' + str(args.limit) if args.limit else ''} --write`, "
        f"{datetime.date.today().isoformat()}, 2 CPU cores shared with other work, torch threads = {args.threads}.",
        "",
        f"{report['queries']} factoid questions written by hand from the Python 3.11 docs "
        "(`bench/data/pydocs_factoid.jsonl`, each answer verbatim text of its gold file), whole docs corpus "
        f"retrieved by the default hybrid retriever, k = {args.k}, packaged SmolLM2-135M-Instruct, default "
        f"`[answer]` settings (realm: reader `{report['settings']['realm_reader']}`, "
        f"threshold {report['settings']['realm_threshold']:g}).",
        "",
        "| mode | exact match | token F1 | answer recall | citation accuracy | gold file retrieved | seconds / answer |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in modes:
        r = report[m]
        lines.append(f"| {m} | {f(r['exact_match'])} | {f(r['f1'])} | {f(r['answer_recall'])} | "
                     f"{f(r['citation_accuracy'])} | {f(r['retrieval_recall'])} | {r['seconds_per_answer']:.1f} |")
    details = report.get("realm_details")
    if details:
        lines += [
            "",
            f"- realm: {f(details['verbatim'])} of its answers are verbatim text of a retrieved chunk at the "
            f"reported offsets; it said \"I could not find this in your documents\" on {f(details['no_answer'])} "
            "of the questions.",
            "- realm, the same run at other thresholds on p(y|x) (answers below it become \"no answer\"); "
            "why the reader works as it does, with the measurements behind each choice: docs/realm.md.",
            "",
            "| threshold | answered | exact match (all questions) | exact match of the answered |",
            "| ---: | ---: | ---: | ---: |",
        ]
        lines += [f"| {s['threshold']:g} | {f(s['answered'])} | {f(s['exact_match'])} | {f(s['exact_match_of_answered'])} |"
                  for s in details["sweep"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
