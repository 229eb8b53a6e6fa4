"""The prefix cache: a prompt that starts like one seen before prefills only the rest, and computes
exactly what a full prefill would (tiny random LM, brute-force references)."""

from __future__ import annotations

import pytest
import torch

from assistant.batching import BatchScheduler
from assistant.config import GeneratorConfig
from assistant.lockstep import LockstepBatch, score_continuations
from assistant.modes.rag_token import common_suffix_length
from assistant.prefix_cache import PrefixCache
from knowledge.errors import ConfigError
from tests import tinylm

CHUNKS = ["ada lovelace was born in london . she wrote the first program",
          "marie curie was born in warsaw . she discovered radium and polonium",
          "alan turing was born in london . he was a mathematician"]


@pytest.fixture(scope="module")
def gen():
    return tinylm.make_generator()


def rag_prompts(gen, question, chunks=CHUNKS):
    def prompt(context):
        content = question if context is None else f"context : {context} question : {question}"
        return gen.render([{"role": "system", "content": "you answer questions"}, {"role": "user", "content": content}])
    return [prompt(c) for c in chunks] + [prompt(None)]


def decode(gen, prompts, cache=None, steps=3):
    batch = LockstepBatch(gen.model, prompts, gen.pad_id, cache)
    out = [batch.prefill()]
    for j in range(steps):
        out.append(batch.step(torch.tensor([7 + j + r for r in range(len(prompts))])))
    return out


def assert_same(got, want):
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, atol=1e-4), float((a - b).abs().max())


def test_a_new_question_over_chunks_seen_before_computes_what_a_full_prefill_does(gen):
    cache = PrefixCache(budget_bytes=10**8, block=4)
    first = rag_prompts(gen, "where was ada born ?")
    assert_same(decode(gen, first, cache), decode(gen, first))
    assert len(cache) == len(first) and cache.hit_tokens == 0
    second = rag_prompts(gen, "who discovered radium ?")
    assert_same(decode(gen, second, cache), decode(gen, second))
    assert cache.hit_tokens > 0  # the chunk prompts' common part came from the cache


def test_rows_with_and_without_a_cached_prefix_share_one_batch(gen):
    cache = PrefixCache(budget_bytes=10**8, block=4)
    decode(gen, rag_prompts(gen, "where was ada born ?", CHUNKS[:1]), cache)
    mixed = rag_prompts(gen, "who was alan turing ?", [CHUNKS[0], CHUNKS[2]])  # chunk 0 seen, chunk 2 not
    hits_before = cache.hit_tokens
    assert_same(decode(gen, mixed, cache), decode(gen, mixed))
    assert cache.hit_tokens > hits_before


def test_the_same_prompt_again_is_served_and_not_stored_twice(gen):
    cache = PrefixCache(budget_bytes=10**8, block=4)
    prompts = rag_prompts(gen, "where was ada born ?")
    decode(gen, prompts, cache)
    entries, size = len(cache), cache.nbytes
    assert_same(decode(gen, prompts, cache), decode(gen, prompts))
    assert (len(cache), cache.nbytes) == (entries, size)


def test_the_last_token_is_always_computed(gen):
    cache = PrefixCache(budget_bytes=10**8, block=4)
    prompt = rag_prompts(gen, "where was ada born ?")[0]
    decode(gen, [prompt], cache)
    length, kv = cache.lookup(prompt)
    assert 0 < length < len(prompt) and length % 4 == 0
    assert kv[0][0].shape[1] == length
    assert cache.lookup(prompt[:3]) == (0, None)  # shorter than a block: nothing to reuse


def test_a_lookup_leaves_as_many_last_tokens_to_compute_as_asked(gen):
    cache = PrefixCache(budget_bytes=10**8, block=4)
    prompt = rag_prompts(gen, "where was ada born ?")[0]
    decode(gen, [prompt], cache)
    for compute in (1, 5, 9, 13):
        length, _ = cache.lookup(prompt, compute=compute)
        assert 0 < length <= len(prompt) - compute and length % 4 == 0
        assert length > len(prompt) - compute - 4  # the longest block-aligned prefix that does
    with pytest.raises(ValueError, match="compute"):
        cache.lookup(prompt, compute=0)


def question_by_continuation(gen, prompts, n):
    """Reference: log p of each prompt's last n tokens by score_continuations after a prefill of the rest."""
    batch = LockstepBatch(gen.model, [p[:-n] for p in prompts], gen.pad_id)
    state = batch.snapshot(batch.prefill())
    return torch.stack(score_continuations(gen.model, state, list(range(len(prompts))), [p[-n:] for p in prompts],
                                           gen.pad_id))  # (B, n)


def test_the_scored_last_tokens_are_computed_not_served_from_the_cache(gen):
    """A prefill that scores the question gets its log-probs right whatever the cache holds: the chunks
    seen with another question, or these very prompts (whose cached prefix reaches into the question)."""
    prompts = rag_prompts(gen, "where was ada born ?")
    n = common_suffix_length(prompts)  # the question and the template's end
    assert n == 8
    want = question_by_continuation(gen, prompts, n)
    plain = LockstepBatch(gen.model, prompts, gen.pad_id).prefill()
    for seen in (rag_prompts(gen, "who discovered radium ?"), prompts):
        cache = PrefixCache(budget_bytes=10**8, block=4)
        decode(gen, seen, cache)
        hits_before = cache.hit_tokens
        out = LockstepBatch(gen.model, prompts, gen.pad_id, cache).prefill_scored(n)
        assert cache.hit_tokens > hits_before  # served from the cache, up to the scored tokens
        assert torch.allclose(out.last_logprobs, want, atol=1e-4), float((out.last_logprobs - want).abs().max())
        assert torch.allclose(out.next_logprobs, plain, atol=1e-4)


def test_least_recently_used_prompts_leave_first_within_the_budget(gen):
    probe = PrefixCache(budget_bytes=10**8, block=4)
    prompts = [rag_prompts(gen, q, CHUNKS[:1])[0] for q in ("where was ada born ?", "who was she ?", "what is radium ?")]
    decode(gen, prompts[:1], probe)
    one = probe.nbytes
    cache = PrefixCache(budget_bytes=int(2.5 * one), block=4)
    for p in prompts:
        decode(gen, [p], cache)
    assert cache.nbytes <= cache.budget_bytes and len(cache) == 2
    assert cache.lookup(prompts[2])[0] > 0
    unrelated = gen.render([{"role": "user", "content": "alpha beta gamma delta epsilon zeta eta theta"}])
    assert cache.lookup(unrelated) == (0, None)


def test_shared_batches_use_the_prefix_cache_too(gen):
    cache = PrefixCache(budget_bytes=10**8, block=4)
    scheduler = BatchScheduler(gen.model, gen.pad_id, gather_seconds=0.0, prefix_cache=cache)
    for question in ("where was ada born ?", "who discovered radium ?"):
        prompts = rag_prompts(gen, question)
        with scheduler.batch(prompts) as batch:
            got = [batch.prefill(), batch.step(torch.tensor([7 + r for r in range(len(prompts))]))]
        assert_same(got, decode(gen, prompts, steps=1))
    assert cache.hit_tokens > 0
    scheduler.close()


def test_a_shared_member_scores_its_question_after_cached_prefixes(gen):
    cache = PrefixCache(budget_bytes=10**8, block=4)
    scheduler = BatchScheduler(gen.model, gen.pad_id, gather_seconds=0.0, prefix_cache=cache)
    for question in ("where was ada born ?", "who discovered radium ?", "who discovered radium ?"):
        prompts = rag_prompts(gen, question)
        with scheduler.batch(prompts) as batch:
            out = batch.prefill_scored(8)
        assert torch.allclose(out.last_logprobs, question_by_continuation(gen, prompts, 8), atol=1e-4)
    assert cache.hit_tokens > 0
    scheduler.close()


def test_the_setting_builds_the_cache_and_refuses_a_negative_size():
    with pytest.raises(ConfigError, match="prefix_cache_mb"):
        GeneratorConfig(prefix_cache_mb=-1)
    tok = tinylm.make_tokenizer()
    from assistant.generator import Generator

    assert Generator(tinylm.make_model(len(tok)), tok).prefix_cache is None
    cached = Generator(tinylm.make_model(len(tok)), tok, prefix_cache_mb=8)
    assert cached.prefix_cache.budget_bytes == 8 * 2**20
    assert cached.lockstep([[5, 6, 7]]).prefix_cache is cached.prefix_cache
