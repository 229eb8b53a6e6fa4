"""RAG-Token decoding speed and time to first token at k = 1, 3, 5, 10 next to the plain LM, in one run.

    .venv/bin/python bench/rag_token_speed.py [--steps 32] [--ks 1,3,5,10] [--threads 1] [--dtype bfloat16]
                                              [--ttft-rounds 5] [--no-write]
    .venv/bin/python bench/rag_token_speed.py --rerank [--rounds 5] [--threads 1] [--dtype bfloat16] [--no-write]

The plain LM is k = 1 (one prompt, no mixture). Decode steps of all k alternate, so every k sees
the same machine load and the ratio to the plain LM is stable even on a busy machine. The k
document-conditioned prompts run in lockstep as one batch with a KV cache (assistant/lockstep.py).
More rows at k = 5 add the null document (the closed-book prompt) as row k + 1, as the
rag-token mode decodes: with the contrast off, with the default ``[answer]`` contrast
(context-aware decoding) when the defaults have one, each combining its rows exactly as the mode
does, and with the chunks seen before: the prefix cache (``[generator] prefix_cache_mb``) warmed by
another question over the same chunks, so prefill computes only what follows each chunk.

``--rerank`` measures instead what the question-likelihood prior (``answer.prior_question_weight``,
the default 0.5) costs a whole rag-token answer at k = 5: scored by an extra prefill and a
continuation pass (``question_logprobs``, the path before), by the decoding prefill itself (the
mode's path now), and not reranked (q = 0); the three take turns, answer after answer.
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import machine, write_section

import torch

from assistant.config import AnswerConfig, GeneratorConfig
from assistant.decoding import Contrast, grounded_mixture, mixture
from assistant.generator import Generator
from assistant.lockstep import LockstepBatch
from assistant.marginals import question_likelihood_prior, retrieval_prior
from assistant.modes.mixture import contrast_of, decoding_batch, stream_grounded
from assistant.modes.rag_token import question_logprobs, question_tokens
from assistant.prefix_cache import PrefixCache
from assistant.prompts import messages

FILLER = "The harbour of Quillhaven was rebuilt after the storm of 1921 and its brewery produced a dark ale. " * 12
QUESTION = "Who founded the Zorblax Festival?"


def rag_prompts(generator: Generator, config: AnswerConfig, k: int, question: str, null: bool) -> list[list[int]]:
    prompts = [generator.render(messages(config.system_prompt, [], question, f"Document {i}. " + FILLER[i * 7:]))
               for i in range(k)]
    return prompts + [generator.render(messages(config.system_prompt, [], question, None))] if null else prompts


def warmed_cache(generator: Generator, config: AnswerConfig, k: int, null: bool, round_: int) -> PrefixCache:
    """A prefix cache that has seen the same chunks for another question (not timed)."""
    cache = PrefixCache(GeneratorConfig().prefix_cache_mb * 2**20)
    LockstepBatch(generator.model, rag_prompts(generator, config, k, f"Where is festival {round_} held?", null),
                  generator.pad_id, cache).prefill()
    return cache


def start(generator: Generator, k: int, config: AnswerConfig, contrast: Contrast | None = None,
          seen: bool = False) -> dict:
    """Prefill k document-conditioned prompts (and, with a ``contrast``, the null prompt) as one
    batch; returns the decoding state. ``seen``: the chunks were in an earlier question's prompts
    (a prefix cache warmed by another question)."""
    prompts = rag_prompts(generator, config, k, QUESTION, null=False)
    prior = torch.full((k,), -torch.log(torch.tensor(float(k))))  # (k,) uniform log p(z|x)
    if contrast is None:
        combine, label = mixture(prior), "plain LM (k = 1)" if k == 1 else f"rag-token k = {k}"
    else:
        prompts = rag_prompts(generator, config, k, QUESTION, null=True)
        combine = grounded_mixture(prior, contrast)
        label = f"rag-token k = {k} + null row" + (", contrast on (the defaults)" if contrast.active else "")
    if seen:
        label += ", chunks seen before (prefix cache)"
    make_cache = (lambda r: warmed_cache(generator, config, k, contrast is not None, r)) if seen else (lambda r: None)
    batch, token, ttft = prefill(generator, prompts, combine, make_cache(0))
    return {"k": k, "rows": len(prompts), "label": label, "batch": batch, "combine": combine, "token": token,
            "ttft": [ttft], "steps": [], "prompt_tokens": len(prompts[0]), "prompts": prompts, "make_cache": make_cache}


def prefill(generator: Generator, prompts: list[list[int]], combine,
            cache: PrefixCache | None = None) -> tuple[LockstepBatch, int, float]:
    """A batch of ``prompts`` prefilled, its first token and the seconds that took (time to first token)."""
    batch = LockstepBatch(generator.model, prompts, generator.pad_id, cache)
    t = time.perf_counter()
    token = int(combine(batch.prefill().unsqueeze(0))[0].argmax())  # (1, R, V) -> (V,)
    return batch, token, time.perf_counter() - t


SCORES = torch.tensor([0.52, 0.50, 0.47, 0.45, 0.41])  # (k,) dense scores of the k = 5 chunks


def prior_by_extra_prefill(generator: Generator, prompts: list[list[int]], config: AnswerConfig):
    """The path before: log p(x|z) by an extra prefill of the prompts without the question, and a pass
    of the question; decoding then prefills the prompts again (the question only, from the prefix cache)."""
    prior = question_likelihood_prior(SCORES, question_logprobs(generator, prompts[:-1], prompts[-1]),
                                      config.prior_temperature, config.prior_question_weight)  # (k,)
    return prior, stream_grounded(generator, prompts, prior, config)


def prior_by_decoding_prefill(generator: Generator, prompts: list[list[int]], config: AnswerConfig):
    """The mode's path (assistant/modes/rag_token.py): the decoding prefill scores the question too."""
    batch = decoding_batch(generator, prompts)
    first = batch.prefill_scored(question_tokens(prompts))
    prior = question_likelihood_prior(SCORES, first.last_logprobs[:-1].sum(dim=-1), config.prior_temperature,
                                      config.prior_question_weight)  # (k,)
    return prior, stream_grounded(generator, prompts, prior, config, prefilled=(batch, first.next_logprobs))


def retrieval_prior_only(generator: Generator, prompts: list[list[int]], config: AnswerConfig):
    """No reranking (q = 0): the retrieval prior, one prefill."""
    prior = retrieval_prior(SCORES, config.prior_temperature)  # (k,)
    return prior, stream_grounded(generator, prompts, prior, config)


PRIOR_PATHS = {
    "q = 0.5, extra prefill (before)": prior_by_extra_prefill,
    "q = 0.5, from the decoding prefill (now)": prior_by_decoding_prefill,
    "q = 0 (retrieval prior, no reranking)": retrieval_prior_only,
}


def timed_answer(generator: Generator, path, prompts: list[list[int]], config: AnswerConfig) -> dict:
    """One answer: seconds to its first streamed token and to its end, its text and prior."""
    t = time.perf_counter()
    prior, steps = path(generator, prompts, config)
    first, texts = None, []
    for _, text in steps:
        first = first if first is not None else time.perf_counter() - t
        texts.append(text)
    return {"ttft": first, "seconds": time.perf_counter() - t, "text": "".join(texts), "prior": prior}


def rerank(args: argparse.Namespace) -> None:
    generator = Generator.from_config(GeneratorConfig(threads=args.threads, dtype=args.dtype))
    config = AnswerConfig()
    prompts = rag_prompts(generator, config, 5, QUESTION, null=True)
    results: dict[str, dict[str, list]] = {}
    for r in range(args.rounds):
        for warm in (False, True):
            names = list(PRIOR_PATHS) if r % 2 == 0 else list(PRIOR_PATHS)[::-1]  # turns, in both orders
            for name in names:
                cache = warmed_cache(generator, config, 5, True, r) if warm else PrefixCache(
                    GeneratorConfig().prefix_cache_mb * 2**20)
                generator.prefix_cache = cache
                out = timed_answer(generator, PRIOR_PATHS[name], prompts, config)
                for key, value in out.items():
                    results.setdefault(f"{name}|{warm}", {}).setdefault(key, []).append(value)
    before, now, plain = list(PRIOR_PATHS)
    rows = []
    for warm in (False, True):
        res = {name: results[f"{name}|{warm}"] for name in PRIOR_PATHS}
        ttft = {name: statistics.median(r["ttft"]) for name, r in res.items()}
        seconds = {name: statistics.median(r["seconds"]) for name, r in res.items()}
        same = all(a == b for a, b in zip(res[before]["text"], res[now]["text"]))
        gap = max(float((a.exp() - b.exp()).abs().max()) for a, b in zip(res[before]["prior"], res[now]["prior"]))
        for name in PRIOR_PATHS:
            rows.append(f"| {'chunks seen before' if warm else 'cold'} | {name} | {ttft[name]:.2f} | "
                        f"{ttft[name] / ttft[before]:.2f}× | {ttft[name] / ttft[plain]:.2f}× | {seconds[name]:.2f} | "
                        f"{seconds[name] / seconds[before]:.2f}× | {seconds[name] / seconds[plain]:.2f}× |"
                        + (f" same answers as before: {'yes' if same else 'NO'}; prior probabilities within {gap:.3f} of before's |" if name == now
                           else " |"))
    table = "\n".join([
        "| prefix cache | prior | time to first token (s) | vs before | vs q = 0 | seconds per answer | vs before "
        "| vs q = 0 | |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |", *rows])
    print(table)
    if not args.no_write:
        write_section("## RAG-Token: the question-likelihood prior from the decoding prefill", "\n".join([
            f"`.venv/bin/python bench/rag_token_speed.py --rerank --rounds {args.rounds} --threads {args.threads} "
            f"--dtype {args.dtype}`; {machine()}.", "",
            f"Packaged SmolLM2-135M ({args.dtype}), rag-token at k = 5 + the null row, prompts of {len(prompts[0])} tokens "
            f"(the question and the template's end: the last {question_tokens(prompts)}), greedy, the default "
            f"`[answer]` (max_new_tokens {config.max_new_tokens}); medians of {args.rounds} answers per row, the "
            "three priors taking turns (in both orders), each answer with an empty prefix cache (cold) or one "
            "warmed by another question over the same chunks (not timed). Before: `question_logprobs`, a prefill "
            "of the prompts without the question and a pass of the question, then the decoding prefill (the "
            "question again, its chunks from the prefix cache). Now: the decoding prefill returns the "
            "question's log-probs too (`LockstepBatch.prefill_scored`), the prior is computed, then decoding "
            "starts.", "",
            table, "",
            "Cold, the extra prefill's keys and values were already reused by the decoding prefill (the prefix "
            "cache), so what the single prefill saves is two forward passes' fixed cost and the question run twice; "
            "with the chunks seen before, prefill is only the question, and that is most of it. The priors of the two "
            "paths differ by bfloat16 rounding only (in float32 their log p(x|z) agree within 1e-4 nats; tests: "
            "tests/test_grounding.py, the extra prefill as the reference).",
        ]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--ks", default="1,3,5,10")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    parser.add_argument("--dtype", default=GeneratorConfig().dtype, help="generator precision (default: [generator] dtype's)")
    parser.add_argument("--ttft-rounds", type=int, default=5, help="prefills per configuration, taking turns")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--rerank", action="store_true",
                        help="measure the question-likelihood prior's cost instead (k = 5, before / now / q = 0)")
    parser.add_argument("--rounds", type=int, default=5, help="--rerank: answers per configuration, taking turns")
    args = parser.parse_args()
    if args.rerank:
        return rerank(args)
    generator = Generator.from_config(GeneratorConfig(threads=args.threads, dtype=args.dtype))
    config = AnswerConfig()
    states = [start(generator, int(k), config) for k in args.ks.split(",")]
    states.append(start(generator, 5, config, Contrast()))
    if contrast_of(config).active:  # the defaults' contrast, when the defaults have one
        states.append(start(generator, 5, config, contrast_of(config)))
    states.append(start(generator, 5, config, Contrast(), seen=True))
    for r in range(1, args.ttft_rounds):  # more prefills, all configurations in turn: a median under load
        for s in states:
            s["ttft"].append(prefill(generator, s["prompts"], s["combine"], s["make_cache"](r))[2])
    for _ in range(args.steps):
        for s in states:
            t = time.perf_counter()
            logprobs = s["batch"].step(torch.full((s["rows"],), s["token"], dtype=torch.long))  # (R, V)
            s["token"] = int(s["combine"](logprobs.unsqueeze(0))[0].argmax())  # (1, R, V) -> (V,)
            s["steps"].append(time.perf_counter() - t)
    rows, base, base_ttft = [], None, None
    k5 = next((len(s["steps"]) / sum(s["steps"]) for s in states if s["label"] == "rag-token k = 5"), None)
    for s in states:
        rate = len(s["steps"]) / sum(s["steps"])
        base = base or rate
        vs_k5 = f"{rate / k5:.2f}×" if k5 and s["k"] == 5 else "–"
        ttft = statistics.median(s["ttft"])
        base_ttft = base_ttft or ttft
        rows.append(f"| {s['label']} | {ttft:.2f} | {ttft / base_ttft:.1f}× | {rate:.1f} | {rate / base:.2f}× | {vs_k5} | "
                    f"{1000 * statistics.median(s['steps']):.0f} |")
    table = "\n".join([
        "| decoding | time to first token (s) | TTFT vs plain LM | decode (tokens/s) | vs plain LM | vs rag-token k = 5 "
        "| median step (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |", *rows])
    print(table)
    if not args.no_write:
        write_section("## RAG-Token decoding speed", "\n".join([
            f"`.venv/bin/python bench/rag_token_speed.py --steps {args.steps} --ks {args.ks} --threads {args.threads} "
            f"--dtype {args.dtype} --ttft-rounds {args.ttft_rounds}`; "
            f"{machine()}.", "",
            f"Packaged SmolLM2-135M ({args.dtype}), prompts of {states[0]['prompt_tokens']} tokens, greedy, {args.steps} steps; "
            "steps of all rows interleaved so every row sees the same load; time to first token = the median of "
            f"{args.ttft_rounds} prefills (prompts + the first token chosen), every configuration in turn. Goals: k = 5 at least 0.6× the plain LM; "
            "the null row (grounding) costs k = 5 at most 10% of its decode speed.", "",
            table, "",
            "HF `generate` under the same conditions (measured by hand once): 8.5 tokens/s at batch 1 and 4.5 at "
            "batch 5 (0.53×): the lockstep batch with its append-in-place KV cache is at least as fast.", "",
            "Time to first token is prefill, and prefill is arithmetic: k chunk prompts are k times the tokens "
            "of one, and each costs about what the plain LM's one prompt does (k = 5: 4.5× the plain LM, "
            "cold; issue 13's goal of ≤ 2× is not met for chunks never seen before). The rows share only the "
            "system prompt (24 of 361 tokens here, 7%), and a separate pass for the short closed-book row "
            "instead of padding it did not measurably win (a bfloat16 forward pass has a fixed cost of about "
            "0.1 s here). What meets it is not recomputing: the chunk comes before the question in the prompt, "
            "so a chunk seen before (another question over the same documents, another user) has its prompt's "
            "keys and values in the prefix cache (`[generator] prefix_cache_mb`, assistant/prefix_cache.py), "
            "and prefill runs only the question: the last row, 0.9× the plain LM's cold time to first token.",
        ]))


if __name__ == "__main__":
    main()
