"""What the quote constraint, the restated focus and the routing at names cost a rag-token answer.

``answer.quote_penalty`` (assistant/quotes.py), ``answer.context_focus`` (assistant/prompts.py) and
``answer.quote_routing`` (assistant/quotes.py, ``routed_scores``).

    .venv/bin/python bench/quote_speed.py [--questions 20] [--rounds 2] [--threads 1] [--no-write]

Counterfactual dev questions over their corpus (``bench/counterfactual_data.py``; the index is the
one bench/grounding.py builds), k = 5, the default ``[answer]`` settings with the constraint off
(``quote_penalty = 0``, the baseline), on without the focus restated in the prompts
(``context_focus = false``), the default without the routing (``quote_routing = 0``), and the
default, the arms taking turns question by question (each first in turn, so the prefix cache
favours none). Reported: seconds per answer and per generated token; the ratio of the per-token
times is the constraint's cost (each step it decodes the answer so far and checks the best tokens'
names and numbers against the chunks), the ratio of the seconds per answer between the second arm
and the default the restatement's (a longer prefill), between the last two the routing's (a
Jensen-Shannon divergence per chunk at the steps writing a name).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, require, write_section  # noqa: E402

HEADING = "## Quote constraint: cost per answer"
CORPUS = ROOT / ".dev-data" / "enwiki-cf" / "counterfactual"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--corpus", default=str(CORPUS))
    parser.add_argument("--data-dir", default=str(ROOT / ".bench-data" / "grounding" / "counterfactual"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    import torch

    from assistant.config import AnswerConfig, GeneratorConfig
    from assistant.engine import load_mode
    from assistant.generator import Generator
    from assistant.qa_eval import load_queries
    from knowledge.config import KnowledgeConfig
    from knowledge.kb import KnowledgeBase

    torch.set_num_threads(args.threads)
    corpus = require(Path(args.corpus))
    queries = load_queries(ROOT / "bench" / "data" / "enwiki_counterfactual_dev.jsonl")[: args.questions]
    generator = Generator.from_config(GeneratorConfig())
    kb = KnowledgeBase.open(KnowledgeConfig(), Path(args.data_dir), folder=corpus)
    try:
        kb.sync()
        hits = [kb.retriever.search(q.question, 5) for q in queries]
    finally:
        kb.close()
    on = AnswerConfig(k=5)
    unfocused = "on, the focus not restated (context_focus = false)"
    unrouted = "the default without the routing at names (quote_routing = 0)"
    arms = {"off (quote_penalty = 0)": replace(on, quote_penalty=0.0, context_focus=False),
            unfocused: replace(on, context_focus=False),
            unrouted: replace(on, quote_routing=0.0),
            f"on (the default: quote_penalty = {on.quote_penalty:g}, quote_focus_penalty = {on.quote_focus_penalty:g}, "
            f"context_focus = true, quote_routing = {on.quote_routing:g})": on}
    modes = {name: load_mode("rag-token", generator, config) for name, config in arms.items()}
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    tokens: dict[str, int] = {name: 0 for name in arms}
    changed = restated = routed = 0
    names = list(arms)
    for r in range(args.rounds):
        for i, (q, h) in enumerate(zip(queries, hits)):
            shift = (i + r) % len(names)
            order = names[shift:] + names[:shift]  # each arm first, second and last in turn: the prefix cache favours none
            texts = {}
            for name in order:
                start = time.perf_counter()
                answer = modes[name].answer(q.question, [], h)
                seconds[name].append(time.perf_counter() - start)
                tokens[name] += len(answer.tokens)
                texts[name] = answer.text
            changed += r == 0 and texts[names[0]] != texts[unfocused]
            restated += r == 0 and texts[unfocused] != texts[names[-1]]
            routed += r == 0 and texts[unrouted] != texts[names[-1]]
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    base = names[0]
    per_token = {name: sum(seconds[name]) / max(tokens[name], 1) for name in arms}
    rows = ["| arm | seconds per answer (median) | seconds per answer vs off | ms per generated token | per token vs off |",
            "| --- | ---: | ---: | ---: | ---: |"]
    for name in arms:
        rows.append(f"| {name} | {statistics.median(seconds[name]):.2f} | "
                    f"{sum(seconds[name]) / sum(seconds[base]):.2f}× | {1000 * per_token[name]:.1f} | "
                    f"{per_token[name] / per_token[base]:.2f}× |")
    table = "\n".join(rows)
    print(table)
    print(f"answers the constraint changed: {changed} of {len(queries)}; the restated focus: {restated}; the routing: {routed}")
    if not args.no_write:
        write_section(HEADING, f"""`.venv/bin/python bench/quote_speed.py --questions {args.questions} --rounds {args.rounds} \
--threads {args.threads}` ({machine()}).

rag-token at k = 5 with the default `[answer]` settings, {len(queries)} counterfactual dev questions (their
retrieved chunks fixed), {args.rounds} rounds, the arms taking turns question by question, each arm first in turn.
A step of the constraint decodes the answer so far and checks the best tokens' names and numbers against the
chunks and the question (assistant/quotes.py); the restated focus lengthens the prompts of the chunks holding a
focus sentence (assistant/prompts.py); the routing computes a Jensen-Shannon divergence per chunk at the steps writing a
name (assistant/quotes.py); seconds per token include the prefill, divided over the tokens.

{table}

The constraint changed {changed} of the {len(queries)} answers; the restated focus changed {restated} and the routing {routed} (each against the arm without it).
""")


if __name__ == "__main__":
    main()
