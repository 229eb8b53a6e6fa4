"""The packaged generator in float32, bfloat16 and int8, with 1 and 2 threads: speed and quality in one table.

    .venv/bin/python bench/generator_precision.py --write                 # speed, then quality of each precision
    .venv/bin/python bench/generator_precision.py --skip-speed            # quality only (kept in --work-dir)
    .venv/bin/python bench/generator_precision.py --reuse-quality --write # speed now, quality from an earlier run

**Speed** (one process, every variant in turn in each round, so all see the same load): prefill of a
k = 5 batch (time to first token of rag-token at k = 5), of the plain LM's one prompt, and decode
tokens/s of lockstep batches of 1 (the plain LM), 5 (rag-token) and 5 + 1 rows (rag-token with the
null document, as the mode decodes), each step combining its rows as the mode does. Peak memory:
a fresh process per precision loads the model, converts it, resets its peak RSS
(/proc/self/clear_refs) and answers a k = 5 + 1 batch (prefill + decode): resident model and
peak RSS.

**Quality** (1 thread, rag-token with the default ``[answer]`` settings): answer recall and
citation accuracy on two QA dev sets (factoid questions over the Python docs, k = 3, as in
bench/realm_qa.py; ordinary questions over gensim's enwiki articles, k = 5), counterfactual
adherence (the known subset of bench/grounding.py's dev split: answers stating the documents'
value, and the model's contradicted value), kNN-LM perplexity on a PTB slice (each precision
builds its own datastore: its keys come from that model).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, Recorder, machine, publish, require  # noqa: E402

import torch  # noqa: E402

from assistant.config import AnswerConfig, GeneratorConfig, KnnConfig  # noqa: E402
from assistant.decoding import grounded_mixture, mixture, single_row  # noqa: E402
from assistant.generator import Generator, convert  # noqa: E402
from assistant.lockstep import LockstepBatch  # noqa: E402
from assistant.modes.mixture import contrast_of  # noqa: E402
from assistant.prompts import messages  # noqa: E402

HEADING = "## Generator precision: float32, bfloat16, int8"
PRECISIONS = ("float32", "bfloat16", "int8")
FILLER = "The harbour of Quillhaven was rebuilt after the storm of 1921 and its brewery produced a dark ale. " * 12
QUESTION = "Who founded the Zorblax Festival?"
K = 5


def prompts(generator: Generator, k: int) -> list[list[int]]:
    """k document-conditioned prompts (as bench/rag_token_speed.py) and the null (closed-book) prompt last."""
    system = AnswerConfig().system_prompt
    docs = [generator.render(messages(system, [], QUESTION, f"Document {i}. " + FILLER[i * 7:])) for i in range(k)]
    return docs + [generator.render(messages(system, [], QUESTION, None))]


@dataclass
class Lane:
    """One lockstep batch of a variant, decoding greedily as the mode would."""

    rows: int
    combine: object
    batch: LockstepBatch | None = None
    token: int = 0
    steps: list[float] = field(default_factory=list)


def lanes() -> dict[str, Lane]:
    prior = torch.full((K,), -torch.log(torch.tensor(float(K))))  # (k,) uniform log p(z|x)
    return {"k1": Lane(1, single_row), "k5": Lane(K, mixture(prior)),
            "k5+1": Lane(K + 1, grounded_mixture(prior, contrast_of(AnswerConfig())))}


def speed_round(model, pad_id: int, batch_prompts: list[list[int]], threads: int, steps: int) -> dict[str, object]:
    """One round of one variant: prefill times of the plain LM's prompt and of the k = 5 batch, then
    ``steps`` decode steps of each lane in turn."""
    torch.set_num_threads(threads)
    out: dict[str, object] = {}
    ways = lanes()
    for name, lane in ways.items():
        rows = batch_prompts[:1] if name == "k1" else batch_prompts[:K] if name == "k5" else batch_prompts
        lane.batch = LockstepBatch(model, rows, pad_id)
        t = time.perf_counter()
        lane.token = int(lane.combine(lane.batch.prefill().unsqueeze(0))[0].argmax())  # (1, R, V) -> (V,)
        out[f"prefill_{name}"] = time.perf_counter() - t
    for _ in range(steps):
        for lane in ways.values():
            t = time.perf_counter()
            logprobs = lane.batch.step(torch.full((lane.rows,), lane.token, dtype=torch.long))  # (R, V)
            lane.token = int(lane.combine(logprobs.unsqueeze(0))[0].argmax())  # (1, R, V) -> (V,)
            lane.steps.append(time.perf_counter() - t)
    for name, lane in ways.items():
        out[f"decode_{name}"] = len(lane.steps) / sum(lane.steps)  # tokens/s
    return out


def measure_speed(base: Generator, precisions, thread_counts, rounds: int, steps: int) -> dict[tuple[str, int], dict]:
    models = {p: convert(copy.deepcopy(base.model), p).eval() for p in precisions}
    batch_prompts = prompts(base, K)
    samples: dict[tuple[str, int], list[dict]] = {(p, t): [] for p in precisions for t in thread_counts}
    for r in range(rounds):
        for (p, t), runs in samples.items():
            runs.append(speed_round(models[p], base.pad_id, batch_prompts, t, steps))
            print(f"round {r + 1}/{rounds} {p} {t} thread(s): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in runs[-1].items()), flush=True)
    return {key: {m: statistics.median(run[m] for run in runs) for m in runs[0]} for key, runs in samples.items()}


def memory_probe(precision: str) -> None:
    """Print (as JSON) this process's resident model and peak RSS while answering a k = 5 + 1 batch."""
    torch.set_num_threads(1)
    generator = Generator.from_config(GeneratorConfig(dtype=precision))
    gc.collect()
    resident = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) to the current RSS
    batch = LockstepBatch(generator.model, prompts(generator, K), generator.pad_id)
    combine = lanes()["k5+1"].combine
    token = int(combine(batch.prefill().unsqueeze(0))[0].argmax())
    for _ in range(16):
        token = int(combine(batch.step(torch.full((K + 1,), token, dtype=torch.long)).unsqueeze(0))[0].argmax())
    print(json.dumps({"resident_mb": resident / 1024, "peak_mb": _status_kb("VmHWM") / 1024,
                      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _status_kb(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{name} not in /proc/self/status")


def measure_memory(precisions) -> dict[str, dict]:
    out = {}
    for p in precisions:
        run = subprocess.run([sys.executable, __file__, "--memory-probe", p], capture_output=True, text=True, check=True)
        out[p] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


# ---- quality ----

def qa_quality(generator: Generator, corpus: Path, data_dir: Path, queries_file: Path, k: int, limit: int,
               mode: str = "rag-token") -> dict:
    from assistant.engine import DialogueEngine
    from assistant.qa_eval import evaluate_qa, load_queries
    from knowledge.config import KnowledgeConfig
    from knowledge.kb import KnowledgeBase

    queries = load_queries(require(queries_file))[: limit or None]
    kb = KnowledgeBase.open(KnowledgeConfig(), data_dir, folder=require(corpus))
    kb.sync()
    try:
        engine = Recorder(DialogueEngine(kb.retriever, generator, AnswerConfig(k=k)))
        started = time.perf_counter()
        report = evaluate_qa(engine, queries, [mode], k)[mode]
    finally:
        kb.close()
    report["seconds"] = time.perf_counter() - started
    report["queries"] = len(queries)
    report["answers"] = [a.text for a in engine.answers[mode]]
    return report


def ptb_quality(generator: Generator, root: Path, train_tokens: int, test_tokens: int) -> dict:
    from assistant.knn.perplexity import datastore_from_text, knn_perplexity, score_text

    knn = KnnConfig()
    ptb = require(DATA / "ptb")
    started = time.perf_counter()
    datastore = datastore_from_text(generator, ptb / "train.txt", root, knn, train_tokens)
    build = time.perf_counter() - started
    scored = score_text(generator, (ptb / "test.txt").read_text(encoding="utf-8"), knn, test_tokens)
    result = knn_perplexity(scored, datastore, [0.25], 1024, 1.0)
    datastore.close()
    return {"base": result.base, "knn": result.knn[0][1], "tokens": result.tokens, "build_seconds": build,
            "score_seconds": scored.lm_seconds}


def measure_quality(base: Generator, precision: str, args) -> dict:
    generator = Generator(convert(copy.deepcopy(base.model), precision), base.tokenizer, base.context_tokens)
    torch.set_num_threads(1)
    work = Path(args.work_dir)
    cf = DATA / "enwiki-cf"
    out = {
        "pydocs": qa_quality(generator, DATA / "pydocs", work / "pydocs", ROOT / "bench/data/pydocs_factoid.jsonl",
                             3, args.qa_limit),
        "enwiki": qa_quality(generator, cf / "original", work / "grounding" / "original",
                             ROOT / "bench/data/enwiki_qa_dev.jsonl", K, args.qa_limit),
        "counterfactual": qa_quality(generator, cf / "counterfactual", work / "grounding" / "counterfactual",
                                     ROOT / "bench/data/enwiki_counterfactual_known_dev.jsonl", K, args.cf_limit),
        "ptb": ptb_quality(generator, work / f"ptb-{precision}-{args.ptb_train}", args.ptb_train, args.ptb_test),
    }
    print(precision, json.dumps({s: {m: v for m, v in r.items() if m != "answers"} for s, r in out.items()}), flush=True)
    return out


def quality_file(args, precision: str) -> Path:
    return Path(args.work_dir) / f"quality-{precision}-qa{args.qa_limit}-cf{args.cf_limit}-ptb{args.ptb_train}-{args.ptb_test}.json"


# ---- table ----

def markdown(speed, memory, quality, args) -> str:
    def f(v, fmt="{:.2f}"):
        return "–" if v is None else fmt.format(v)

    threads = [int(t) for t in args.threads.split(",")]
    ref = speed.get(("float32", threads[0])) if speed else None
    head = ("| precision | threads | prefill k = 5 (s) | prefill plain LM (s) | decode k = 1 (tok/s) | decode k = 5 | "
            "decode k = 5 + 1 | k = 5 + 1 vs float32 | k = 5 vs k = 1 | resident / peak RSS (MB) | "
            "pydocs recall / citation | enwiki recall / citation | counterfactual follows / memory | "
            "PTB ppl base / kNN-LM |")
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- |"]
    for p in args.precisions.split(","):
        for i, t in enumerate(threads):
            s = speed.get((p, t)) if speed else None
            mem = memory.get(p) if memory and i == 0 else None
            q = quality.get(p) if i == 0 else None
            cells = [p, str(t)]
            if s:
                cells += [f(s["prefill_k5"]), f(s["prefill_k1"]), f(s["decode_k1"], "{:.1f}"), f(s["decode_k5"], "{:.1f}"),
                          f(s["decode_k5+1"], "{:.1f}"), f(s["decode_k5+1"] / ref["decode_k5+1"], "{:.2f}×"),
                          f(s["decode_k5"] / s["decode_k1"], "{:.2f}×")]
            else:
                cells += ["–"] * 7
            cells.append(f"{mem['resident_mb']:.0f} / {mem['peak_mb']:.0f}" if mem else "")
            if q:
                cells += [_qa(q["pydocs"]), _qa(q["enwiki"]),
                          f"{_n(q['counterfactual'], 'answer_recall')} / {_n(q['counterfactual'], 'leakage')}",
                          f"{q['ptb']['base']:.2f} / {q['ptb']['knn']:.2f}"]
            else:
                cells += [""] * 4
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _n(report: dict, metric: str) -> str:
    """A rate as a count of questions: '14/25'."""
    return f"{round(report[metric] * report['queries'])}/{report['queries']}"


def _qa(report: dict) -> str:
    return f"{_n(report, 'answer_recall')} / {_n(report, 'citation_accuracy')}"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precisions", default=",".join(PRECISIONS))
    p.add_argument("--threads", default="1,2", help="thread counts measured for speed (quality runs use 1)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=16, help="decode steps per lane and round")
    p.add_argument("--qa-limit", type=int, default=25, help="first N questions of each QA dev set (0 = all)")
    p.add_argument("--cf-limit", type=int, default=0, help="first N counterfactual questions (0 = all 25 known dev)")
    p.add_argument("--ptb-train", type=int, default=16000, help="datastore tokens from PTB train")
    p.add_argument("--ptb-test", type=int, default=4000, help="scored tokens of PTB test")
    p.add_argument("--work-dir", default=str(ROOT / ".bench-data" / "gen-precision"))
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--reuse-quality", action="store_true", help="take each precision's quality from an earlier run's file")
    p.add_argument("--memory-probe", help=argparse.SUPPRESS)
    p.add_argument("--write", action="store_true")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe)
        return
    precisions = args.precisions.split(",")
    base = Generator.from_config(GeneratorConfig())
    speed = memory = None
    if not args.skip_speed:
        speed = measure_speed(base, precisions, [int(t) for t in args.threads.split(",")], args.rounds, args.steps)
        memory = measure_memory(precisions)
    quality = {}
    for p in precisions:
        path = quality_file(args, p)
        if args.reuse_quality and path.is_file():
            quality[p] = json.loads(path.read_text(encoding="utf-8"))
        elif not args.skip_quality:
            quality[p] = measure_quality(base, p, args)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(quality[p]), encoding="utf-8")
    text = "\n".join([
        f"`.venv/bin/python bench/generator_precision.py --rounds {args.rounds} --steps {args.steps} --threads {args.threads} "
        f"--qa-limit {args.qa_limit} --ptb-train {args.ptb_train} --ptb-test {args.ptb_test}`; {machine()}.", "",
        markdown(speed, memory, quality, args)])
    publish(HEADING, text, args.write)


if __name__ == "__main__":
    main()
