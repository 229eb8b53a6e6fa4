"""Grounding: do answers follow the documents where they contradict the model's memory, and are the
words from memory marked? Counterfactual questions (NQ-Swap style) and their ordinary twins.

    .venv/bin/python bench/counterfactual_data.py --dest .dev-data/enwiki-cf      # the two corpora, once
    .venv/bin/python bench/grounding.py --split dev --variants plain,cad0.5-apc --sets counterfactual   # a sweep
    .venv/bin/python bench/grounding.py --split dev --subset known --variants plain,default  # facts the model knows
    .venv/bin/python bench/grounding.py --split test --variants plain,default --write        # the reported run

Each variant is a set of ``[answer]`` settings (``VARIANTS`` below, or ``name={json}`` on the
command line). For every variant and mode it reports, on the counterfactual set: the share of
answers stating the documents' value (``follows``, = answer recall), the share stating the
model's contradicted one (``leakage``), ``support_recall`` and ``memory_caught`` (see
assistant.qa_eval); on the ordinary twin: answer recall. ``--save FILE`` keeps every answer's JSON
so that support rules can be re-scored without generating again (``--relabel FILE``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, Recorder, machine, publish, require  # noqa: E402

HEADING = "## Grounding: counterfactual questions (documents against the model's memory)"
CORPUS = DATA / "enwiki-cf"
TRUST_PROMPT = ("You answer questions using only the given context. The context is correct and up to date, even where "
                "it differs from what you remember. Answer briefly, in one sentence.")
RESTATE_PROMPT = ("You answer questions using the given context. Answer briefly, in one full sentence that restates "
                  "what was asked.")
VARIANTS: dict[str, dict] = {
    "plain": {"context_weight": 0.0, "plausibility": 0.0, "quote_penalty": 0.0},  # no contrast, no quote constraint
    "cad0.5": {"context_weight": 0.5, "plausibility": 0.0},
    "cad1": {"context_weight": 1.0, "plausibility": 0.0},
    "cad2": {"context_weight": 2.0, "plausibility": 0.0},
    "adacad": {"context_weight": 1.0, "context_weight_adaptive": True, "plausibility": 0.0},
    "cad0.5-apc": {"context_weight": 0.5, "plausibility": 0.1},
    "cad1-apc": {"context_weight": 1.0, "plausibility": 0.1},
    "cad2-apc": {"context_weight": 2.0, "plausibility": 0.1},
    "adacad-apc": {"context_weight": 1.0, "context_weight_adaptive": True, "plausibility": 0.1},
    "mix1-apc": {"context_weight": 1.0, "plausibility": 0.1, "context_contrast": "mixture"},
    "mix2-apc": {"context_weight": 2.0, "plausibility": 0.1, "context_contrast": "mixture"},
    "mix1-apc.3": {"context_weight": 1.0, "plausibility": 0.3, "context_contrast": "mixture"},
    "mixada2-apc": {"context_weight": 2.0, "context_weight_adaptive": True, "plausibility": 0.1,
                    "context_contrast": "mixture"},
    "down1": {"context_weight": 1.0, "context_penalty_only": True},
    "down3": {"context_weight": 3.0, "context_penalty_only": True},
    "mixdown1": {"context_weight": 1.0, "context_penalty_only": True, "context_contrast": "mixture"},
    "mixdown3": {"context_weight": 3.0, "context_penalty_only": True, "context_contrast": "mixture"},
    "gate2-mix1-apc.3": {"context_weight": 1.0, "plausibility": 0.3, "context_contrast": "mixture", "context_conflict": 2.0},
    "gate2-mix2-apc": {"context_weight": 2.0, "plausibility": 0.1, "context_contrast": "mixture", "context_conflict": 2.0},
    "gate1-mix2-apc": {"context_weight": 2.0, "plausibility": 0.1, "context_contrast": "mixture", "context_conflict": 1.0},
    "follow1": {"context_contrast": "follow", "context_conflict": 1.0},
    "follow2": {"context_contrast": "follow", "context_conflict": 2.0},
    "follow3": {"context_contrast": "follow", "context_conflict": 3.0},
    "trust": {"system_prompt": TRUST_PROMPT, "context_weight": 0.0, "plausibility": 0.0},
    "trust-cad1-apc": {"system_prompt": TRUST_PROMPT, "context_weight": 1.0, "plausibility": 0.1},
    "default": {},
    "trust-default": {"system_prompt": TRUST_PROMPT, "quote_penalty": math.inf, "context_focus": True, "quote_routing": 3.5},
    "restate": {"system_prompt": RESTATE_PROMPT, "quote_penalty": math.inf, "context_focus": True, "quote_routing": 3.5},
}
# The prior: the retrieval temperature (T), and the generator's likelihood of the question under each chunk (q, the
# weight of log p(x|z) in p(z|x) ∝ exp(s/T) · p(x|z)^q), with plain decoding and with the recommended contrast.
for _t in (0.01, 0.02, 0.03, 0.1, 0.2):
    VARIANTS[f"plain-T{_t:g}"] = {**VARIANTS["plain"], "prior_temperature": _t}
    VARIANTS[f"mix1-apc.3-T{_t:g}"] = {**VARIANTS["mix1-apc.3"], "prior_temperature": _t}
for _q in (0.25, 0.5, 1.0, 2.0):
    VARIANTS[f"plain-q{_q:g}"] = {**VARIANTS["plain"], "prior_question_weight": _q}
    VARIANTS[f"mix1-apc.3-q{_q:g}"] = {**VARIANTS["mix1-apc.3"], "prior_question_weight": _q}
    VARIANTS[f"plain-q{_q:g}-T0.02"] = {**VARIANTS[f"plain-q{_q:g}"], "prior_temperature": 0.02}
# quoted names and numbers (assistant/quotes.py): unquoted ones cost quote_penalty nats, inf = never stated
for _p in (1.0, 2.0, 4.0, 8.0, math.inf):
    VARIANTS[f"quote{_p:g}"] = {**VARIANTS["plain"], "quote_penalty": _p}
    VARIANTS[f"mix1-apc.3-quote{_p:g}"] = {**VARIANTS["mix1-apc.3"], "quote_penalty": _p}
for _a in (0.5, 1.0, 2.0):
    for _g in (0.0, 0.5, 1.0, 2.0):
        VARIANTS[f"quoteinf-vc{_a:g}-g{_g:g}"] = {**VARIANTS["plain"], "quote_penalty": math.inf, "quote_contrast": _a,
                                                  "quote_conflict": _g}
# the focus tier (assistant/focus.py): quoted names and numbers outside the sentences the question points to cost p nats
for _p in (1.0, 2.0, 4.0, 8.0):
    VARIANTS[f"focus{_p:g}"] = {"quote_penalty": math.inf, "quote_focus_penalty": _p, "context_focus": False}
    for _r in (0.6, 1.0):
        VARIANTS[f"focus{_p:g}-r{_r:g}"] = {"quote_penalty": math.inf, "quote_focus_penalty": _p, "quote_focus_ratio": _r,
                                             "context_focus": False}
# the focus restated after each chunk in its prompt (answer.context_focus)
VARIANTS["nocontextfocus"] = {"quote_penalty": math.inf, "context_focus": False}  # the default before
for _p in (0.0, 2.0):
    VARIANTS[f"contextfocus-f{_p:g}"] = {"quote_penalty": math.inf, "quote_focus_penalty": _p, "context_focus": True}
# the chunks re-weighted by their departure from the null document where the answer writes a name (answer.quote_routing)
VARIANTS["noquoterouting"] = {"quote_penalty": math.inf, "context_focus": True, "quote_routing": 0.0}  # the default before
VARIANTS["nofocus"] = {"quote_penalty": math.inf, "quote_focus_penalty": 0.0, "context_focus": False}  # before the focus tier
# the retrieval prior alone at its old default (T = 0.05, no question likelihood), whatever the defaults are now
VARIANTS["plain-retrieval"] = {**VARIANTS["plain"], "prior_temperature": 0.05, "prior_question_weight": 0.0}
VARIANTS["mix1-apc.3-retrieval"] = {**VARIANTS["mix1-apc.3"], "prior_temperature": 0.05, "prior_question_weight": 0.0}
# answers may not open by announcing a value (answer.restate_openers), and the focus tier's penalty on every default
VARIANTS["noopeners"] = {"quote_penalty": math.inf, "context_focus": True, "quote_routing": 3.5}  # the default before
# answers that do not loop (answer.loop_words)
VARIANTS["noloops"] = {"quote_penalty": math.inf, "context_focus": True, "quote_routing": 3.5, "restate_openers": True}
# a first sentence that only echoes the question may not end there (answer.refuse_echoes)
VARIANTS["noechoes"] = {"quote_penalty": math.inf, "context_focus": True, "quote_routing": 3.5, "restate_openers": True,
                        "loop_words": 16}  # the default before
# the token that continues the focus sentence the answer follows gains nats (answer.copy_bonus)
VARIANTS["nocopy"] = {"quote_penalty": math.inf, "context_focus": True, "quote_routing": 3.5, "restate_openers": True,
                      "loop_words": 16, "refuse_echoes": True}  # the default before
for _p in (1.5, 2.0):
    VARIANTS[f"default-f{_p:g}"] = {"quote_penalty": math.inf, "context_focus": True, "quote_routing": 3.5,
                                     "restate_openers": True, "quote_focus_penalty": _p}

for _name, _settings in VARIANTS.items():  # every named variant but "default" as measured: without the quote constraint,
    if _name != "default":  # the focus restated in the prompts, the routing at names, the opener, echo and repeat rules and the copy bonus, unless they say so
        _settings.setdefault("quote_penalty", 0.0)
        _settings.setdefault("context_focus", False)
        _settings.setdefault("quote_routing", 0.0)
        _settings.setdefault("restate_openers", False)
        _settings.setdefault("loop_words", 0)
        _settings.setdefault("refuse_echoes", False)
        _settings.setdefault("copy_bonus", 0.0)


def parse_variants(spec: str) -> dict[str, dict]:
    """``name`` (of VARIANTS) or ``name={json}`` (the defaults with these settings), comma-separated."""
    out = {}
    for item in filter(None, _top_level_split(spec)):
        name, _, settings = item.partition("=")
        out[name] = json.loads(settings) if settings else VARIANTS[name]
    return out


def _top_level_split(spec: str) -> list[str]:
    """``spec`` split at the commas outside braces (a JSON variant has its own)."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(spec):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(spec[start:i])
            start = i + 1
    return items + [spec[start:]]


def query_file(kind: str, subset: str, split: str) -> Path:
    """bench/data/enwiki_<kind>[_known][_<split>].jsonl"""
    name = f"enwiki_{kind}" + ("_known" if subset == "known" else "") + ("" if split == "all" else f"_{split}")
    return ROOT / "bench" / "data" / f"{name}.jsonl"


def prepare(engine, modes) -> None:
    """Each mode's derived data in the foreground, with progress: kNN-LM's datastore of the whole corpus
    (kept in the data dir: built once, about 200 generator tokens a second on these cores)."""
    from knowledge.progress import TqdmProgress

    progress = TqdmProgress()
    try:
        for mode in modes:
            engine.mode(mode).prepare(progress)
    finally:
        progress.close()


def run_set(engine_for, queries, variants, modes, k, limit):
    """Yields ((variant, mode), report, [answer json]) for one corpus."""
    from assistant.modes.realm import NO_ANSWER
    from assistant.qa_eval import evaluate_qa

    for name, settings in variants.items():
        engine = Recorder(engine_for(settings))
        for mode in modes:
            start = time.perf_counter()
            report = evaluate_qa(engine, queries[: limit or None], [mode], k).metrics(mode).to_json()
            report["seconds"] = time.perf_counter() - start
            report["no_answer"] = sum(a.text == NO_ANSWER for a in engine.answers[mode]) / max(len(engine.answers[mode]), 1)
            print(f"{name:>12} {mode:>13}: {json.dumps({m: _r(v) for m, v in report.items()})}", flush=True)
            yield (name, mode), report, [a.to_json() for a in engine.answers.pop(mode)]


def relabel(path: Path, rule) -> None:
    """Re-score saved answers under another support rule (no generation): support_recall and
    memory_caught per saved run, as ``footnotes eval qa`` computes them."""
    from assistant.answer import Answer, RetrievedChunk, TokenProvenance
    from assistant.qa_eval import support_counts
    from assistant.support import label_support

    for key, run in json.loads(path.read_text(encoding="utf-8")).items():
        counts = [0, 0, 0, 0]
        for q, a in zip(run["questions"], run["answers"]):
            chunks = tuple(RetrievedChunk(c["chunk_id"], c["source"], c["start"], c["end"], c["text"], (), c["score"],
                                          c["prior"], c["posterior"]) for c in a["chunks"])
            texts = [t["text"] for t in a["tokens"]]
            pmis = [[-math.inf if v is None else v for v in t["support"]["pmi"]] for t in a["tokens"]]
            labels = label_support(texts, pmis, [t["support"]["closed_book"] for t in a["tokens"]],
                                   [c.text for c in chunks], q["question"], rule)
            tokens = tuple(TokenProvenance(t["text"], t["prob"], tuple(t["posterior"]), support=s)
                           for t, s in zip(a["tokens"], labels))
            answer = Answer(a["answer"], a["mode"], chunks, tokens)
            counts = [x + y for x, y in zip(counts, support_counts(answer, q["answers"], q.get("original", []), q["gold"]))]
        print(f"{key}: support_recall {counts[0]}/{counts[1]} = {_share(counts[0], counts[1])}, "
              f"memory_caught {counts[2]}/{counts[3]} = {_share(counts[2], counts[3])}")


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.3f}" if whole else "– (none)"


def focus_hits(path: Path) -> None:
    """Per saved run: the questions whose focus (at the default quote_focus_ratio) holds an accepted
    answer (a case-insensitive substring), and the focus's mean size in sentences."""
    from assistant.config import AnswerConfig
    from assistant.focus import focus_sentences

    ratio = AnswerConfig().quote_focus_ratio
    for key, run in json.loads(path.read_text(encoding="utf-8")).items():
        hits = size = 0
        for q, a in zip(run["questions"], run["answers"]):
            focus = focus_sentences(q["question"], [c["text"] for c in a["chunks"]], ratio)
            hits += any(g.lower() in s.lower() for s in focus for g in q["answers"])
            size += len(focus)
        n = max(len(run["answers"]), 1)
        print(f"{key}: focus holds an answer for {hits}/{len(run['answers'])}, {size / n:.2f} sentences on average")


def realm_thresholds(paths: list[Path], thresholds: list[float]) -> list[dict]:
    """REALM's "no answer" threshold re-applied to saved answers (no generation): the best answer of
    each saved n-best list is kept when p(y|x) >= t, else the mode says it could not find it. Per saved
    run and threshold: the share answered "could not find", answer recall, leakage, the refusals whose
    best answer would have been right, and the refusals with an accepted answer in a retrieved chunk."""
    from assistant.qa_eval import answer_recall, leakage

    rows = []
    for path in paths:
        for key, run in json.loads(path.read_text(encoding="utf-8")).items():
            for t in thresholds:
                refused = recall = leak = lost = in_chunk = 0
                for q, a in zip(run["questions"], run["answers"]):
                    best = (a.get("n_best") or [None])[0]
                    answered = best is not None and math.exp(best["logprob"]) >= t
                    text = best["text"] if answered else ""
                    refused += not answered
                    recall += answer_recall(text, q["answers"]) if answered else 0
                    leak += leakage(text, q.get("original", [])) if answered else 0
                    lost += (not answered) and best is not None and answer_recall(best["text"], q["answers"]) > 0
                    in_chunk += (not answered) and any(answer_recall(c["text"], q["answers"]) > 0 for c in a["chunks"])
                n = max(len(run["answers"]), 1)
                rows.append({"run": key, "threshold": t, "no_answer": refused / n, "answer_recall": recall / n,
                             "leakage": leak / n, "refused_right": lost, "refused_in_chunk": in_chunk, "n": len(run["answers"])})
    return rows


def _r(v):
    return round(v, 3) if isinstance(v, float) else v


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(CORPUS), help="folder with counterfactual/ and original/")
    parser.add_argument("--split", default="dev", choices=("dev", "test", "all"))
    parser.add_argument("--variants", default="plain,default")
    parser.add_argument("--modes", default="rag-token")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--sets", default="counterfactual,ordinary",
                        help="counterfactual (the edited corpus), ordinary (the same questions, unchanged corpus), or both")
    parser.add_argument("--subset", default="all", choices=("all", "known"),
                        help="known: only the questions whose original the closed-book model states")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=str(ROOT / ".bench-data" / "grounding"))
    parser.add_argument("--save", help="write every answer's JSON here")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--relabel", help="re-score the answers saved in this file (--save) under --rule; no generation")
    parser.add_argument("--rule", default="{}", help='support rule for --relabel, e.g. \'{"threshold": 2.0}\'')
    parser.add_argument("--focus-hits", help="comma-separated --save files: for each saved run, how many questions' "
                        "focus (assistant/focus.py, over their retrieved chunks) holds an accepted answer; no generation")
    parser.add_argument("--realm-thresholds", help="comma-separated [answer.realm] thresholds re-applied to the realm answers "
                        "saved in the --relabel files (comma-separated); no generation")
    args = parser.parse_args()
    if args.focus_hits:
        for path in args.focus_hits.split(","):
            focus_hits(Path(path))
        return
    if args.realm_thresholds:
        for row in realm_thresholds([Path(p) for p in args.relabel.split(",")],
                                    [float(t) for t in args.realm_thresholds.split(",")]):
            print(json.dumps({k: v if k == "threshold" else _r(v) for k, v in row.items()}))
        return
    if args.relabel:
        from assistant.support import SupportRule

        relabel(Path(args.relabel), SupportRule(**json.loads(args.rule)))
        return

    import torch

    from assistant.config import AnswerConfig, GeneratorConfig, KnnConfig
    from assistant.engine import DialogueEngine
    from assistant.generator import Generator
    from assistant.modes.base import ModeResources
    from assistant.qa_eval import load_queries
    from knowledge.config import KnowledgeConfig
    from knowledge.kb import KnowledgeBase

    torch.set_num_threads(args.threads)
    corpus = require(Path(args.corpus))
    variants = parse_variants(args.variants)
    modes = [m for m in args.modes.split(",") if m]
    generator = Generator.from_config(GeneratorConfig())
    chosen = set(args.sets.split(","))
    sets = [(folder, kind) for name, folder, kind in (("counterfactual", "counterfactual", "counterfactual"),
                                                      ("ordinary", "original", "qa")) if name in chosen]
    results, saved = {}, {}
    for folder, kind in sets:
        queries = load_queries(query_file(kind, args.subset, args.split))
        kb = KnowledgeBase.open(KnowledgeConfig(), Path(args.data_dir) / folder, folder=corpus / folder)
        kb.sync()
        try:
            def engine_for(settings, kb=kb):
                engine = DialogueEngine(kb.retriever, generator, replace(AnswerConfig(k=args.k), **settings),
                                        ModeResources(kb.store, kb.data_dir, knn=KnnConfig()))
                prepare(engine, modes)
                return engine

            for key, report, answers in run_set(engine_for, queries, variants, modes, args.k, args.limit):
                results[(folder, *key)] = report
                saved[f"{folder}/{key[0]}/{key[1]}"] = {"questions": [q.__dict__ for q in queries[: args.limit or None]],
                                                         "answers": answers, "report": report}
                if args.save:  # after every run: a long sweep that is stopped keeps what it measured
                    Path(args.save).write_text(json.dumps(saved, default=list), encoding="utf-8")
        finally:
            kb.close()
    heading = HEADING + (", facts the model knows" if args.subset == "known" else "")
    publish(heading, markdown(results, variants, modes, args), args.write)


def markdown(results, variants, modes, args) -> str:
    def f(v):
        return "–" if v is None else f"{v:.2f}"

    cmd = (f"`.venv/bin/python bench/grounding.py --split {args.split} --subset {args.subset} --sets {args.sets} "
           f"--variants {args.variants} --modes {args.modes}{' --write' if args.write else ''}`")
    lines = [
        f"{cmd}, {machine()}, torch threads = {args.threads}, k = {args.k}.",
        "",
        "Counterfactual set: gensim's enwiki articles with one fact replaced (bench/counterfactual_data.py), "
        "among untouched articles and news; the ordinary twin asks the same questions over the unchanged corpus.",
        "",
        "| variant | settings | mode | follows the documents | states the model's value | support_recall | "
        "memory_caught | \"could not find\" | ordinary answer recall | s / answer |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, settings in variants.items():
        for mode in modes:
            cf = results.get(("counterfactual", name, mode), {})
            og = results.get(("original", name, mode), {})
            lines.append(
                f"| {name} | `{json.dumps(settings) if settings else 'defaults'}` | {mode} | {f(cf.get('answer_recall'))} | "
                f"{f(cf.get('leakage'))} | {f(cf.get('support_recall'))} | {f(cf.get('memory_caught'))} | "
                f"{f(cf.get('no_answer'))} | "
                f"{f(og.get('answer_recall'))} | {f(cf.get('seconds_per_answer'))} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
