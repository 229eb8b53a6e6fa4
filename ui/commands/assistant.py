"""Assistant commands: ask, chat, and `eval qa`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from .evaluation import open_corpus

if TYPE_CHECKING:  # imported where used: `footnotes status` (same parser) needs none of it
    from knowledge.kb import KnowledgeBase


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ask", help="answer one question from the knowledge base, with provenance")
    p.add_argument("question")
    _answer_options(p)
    p.add_argument("--json", action="store_true", help="print the Answer JSON (chunks, per-token provenance)")
    p.set_defaults(run=cmd_ask)

    p = sub.add_parser("chat", help="an interactive conversation (empty line or Ctrl-D ends it)")
    _answer_options(p)
    p.set_defaults(run=cmd_chat)


def _registered_modes() -> list[str]:
    """The entry points of ``footnotes.modes``, read without importing any mode (no torch)."""
    from importlib.metadata import entry_points

    return sorted(ep.name for ep in entry_points(group="footnotes.modes"))


def _answer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", help=f"answer mode (default: answer.mode): {', '.join(_registered_modes())}")
    p.add_argument("--k", type=int, help="retrieved chunks (default: answer.k)")


def register_eval(evals: argparse._SubParsersAction) -> None:
    q = evals.add_parser("qa", help="exact match, token F1, answer recall, citation accuracy, seconds per answer")
    q.add_argument("--corpus", required=True, help="corpus folder")
    q.add_argument("--queries", required=True, help="JSON Lines query file with answers")
    q.add_argument("--mode", required=True, help="one mode or several, comma-separated")
    q.add_argument("--k", type=int, help="retrieved chunks (default: answer.k)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(run=cmd_eval_qa)


def build_engine(ctx, kb: KnowledgeBase, mode: str | None = None):
    from assistant.engine import DialogueEngine
    from assistant.generator import Generator
    from assistant.modes.base import ModeResources
    from knowledge.progress import TqdmProgress

    answer = ctx.config.assistant.answer
    if mode:
        answer = replace(answer, mode=mode)
    generator = Generator.from_config(ctx.config.assistant.generator)
    resources = ModeResources(kb.store, kb.data_dir, knn=ctx.config.assistant.knn)
    engine = DialogueEngine(kb.retriever, generator, answer, resources)
    progress = TqdmProgress()
    try:
        engine.mode().prepare(progress)  # e.g. kNN-LM's datastore, in the foreground: the CLI exits after one answer
    finally:
        progress.close()
    return engine


def _open_reader(ctx) -> KnowledgeBase:
    from knowledge.kb import KnowledgeBase

    return KnowledgeBase.open(ctx.config.knowledge, ctx.data_dir, write=False)


def cmd_ask(args, ctx) -> int:
    kb = _open_reader(ctx)
    try:
        engine = build_engine(ctx, kb, args.mode)
        if args.json:
            print(json.dumps(engine.ask(args.question, mode=args.mode, k=args.k).to_json(), ensure_ascii=False))
            return 0
        answer = _stream_to_terminal(engine, args.question, (), args.mode, args.k)
        _print_citations(answer)
        return 0
    finally:
        kb.close()


def cmd_chat(args, ctx) -> int:
    from assistant.conversation import Turn

    kb = _open_reader(ctx)
    try:
        engine = build_engine(ctx, kb, args.mode)
        history: list[Turn] = []
        print("Ask a question (empty line ends the chat).", file=sys.stderr)
        while True:
            try:
                question = input("> ").strip()
            except EOFError:
                break
            if not question:
                break
            answer = _stream_to_terminal(engine, question, history, args.mode, args.k)
            _print_citations(answer)
            history += [Turn("user", question), Turn("assistant", answer.text)]
        return 0
    finally:
        kb.close()


def _stream_to_terminal(engine, question, history, mode, k, out=None):
    """Print the answer as it streams, content words from the model's memory marked (underlined
    with a "?" on a terminal, ``[?word]`` elsewhere), then the one-line support summary. A word is
    printed once its mark is final: the words of a marked run wait for the token that ends it."""
    from assistant.answer import Answer

    from ..support_marks import settled_count, support_summary, terminal_text

    out = sys.stdout if out is None else out
    tty = out.isatty() and os.environ.get("TERM") != "dumb"  # underline only where a terminal shows it
    answer, tokens, printed = None, [], 0
    for item in engine.stream(question, history, mode=mode, k=k):
        if isinstance(item, Answer):
            answer = item
            continue
        tokens.append(item.to_json())
        ready = settled_count(tokens)
        if ready > printed:
            print(terminal_text(tokens, printed, ready, tty), end="", flush=True, file=out)
            printed = ready
    if not tokens and answer is not None:  # a mode that streamed nothing before its answer
        tokens = [t.to_json() for t in answer.tokens]
    print(terminal_text(tokens, printed, None, tty), file=out)
    summary = support_summary(tokens)
    if summary is not None:
        print(summary.line(), file=out)
    return answer


def _print_citations(answer, out=None) -> None:
    out = sys.stdout if out is None else out
    cited = answer.cited_chunk() if answer else None
    for i, c in enumerate(answer.chunks if answer else (), 1):
        mark = "*" if c is cited else " "
        post = f" posterior={c.posterior:.2f}" if c.posterior is not None else ""
        print(f" {mark}[{i}] {c.source} [{c.start}:{c.end}] prior={c.prior:.2f}{post}", file=out)


def cmd_eval_qa(args, ctx) -> int:
    from assistant.engine import mode_names
    from assistant.qa_eval import evaluate_qa, load_queries
    from knowledge.errors import UnknownNameError

    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    unknown = [m for m in modes if m not in mode_names()]
    if unknown:
        raise UnknownNameError(f"unknown mode '{unknown[0]}'; registered modes: {', '.join(mode_names())}")
    queries = load_queries(args.queries)
    kb = open_corpus(ctx, args.corpus)
    try:
        result = evaluate_qa(build_engine(ctx, kb, modes[0]), queries, modes, args.k).to_json()
    finally:
        kb.close()
    if args.json:
        print(json.dumps(result))
        return 0
    metrics = ("exact_match", "f1", "answer_recall", "citation_accuracy", "leakage", "support_recall",
               "memory_caught", "seconds_per_answer")
    print(f"{'':14}" + "".join(f"{m:>19}" for m in metrics) + f"   ({result['queries']} queries)")
    for mode in modes:
        cells = [result[mode][m] for m in metrics]
        print(f"{mode:14}" + "".join(f"{'-' if v is None else f'{v:.3f}':>19}" for v in cells))
    return 0
