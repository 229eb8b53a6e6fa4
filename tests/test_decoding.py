"""Lockstep batches, greedy and beam search, token texts and stop strings, on a tiny random LM."""

import pytest
import torch

from tests import tinylm
from assistant.decoding import WordEnds, beam_search, greedy, mixture, single_row
from assistant.lockstep import LockstepBatch, left_pad, positions_of, score_continuations
from assistant.text_stream import TokenTexts, pieces_of


@pytest.fixture(scope="module")
def gen():
    return tinylm.make_generator()


def prompts_of(gen, texts):
    return [gen.render([{"role": "user", "content": t}]) for t in texts]


TEXTS = [
    "ada lovelace was born in london",
    "who",
    "marie curie discovered radium and polonium in paris . she was born in warsaw",
]


def unbatched_next_logprobs(model, ids):
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), dim=-1)


def test_left_pad_and_positions():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions_of(mask).tolist() == [[0, 1, 2], [0, 0, 0]]
    with pytest.raises(ValueError):
        left_pad([[1], []], 0)


def test_left_padded_batch_with_kv_cache_matches_unbatched_runs(gen):
    prompts = prompts_of(gen, TEXTS)
    fed = [[5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]
    batch = LockstepBatch(gen.model, prompts, gen.pad_id)
    steps = [batch.prefill()]
    for j in range(4):
        steps.append(batch.step(torch.tensor([f[j] for f in fed])))
    for row, prompt in enumerate(prompts):
        for j, got in enumerate(steps):
            ref = unbatched_next_logprobs(gen.model, prompt + fed[row][:j])
            assert torch.allclose(got[row], ref, atol=1e-4), (row, j)


def test_select_reorders_and_repeats_rows(gen):
    prompts = prompts_of(gen, TEXTS)
    batch = LockstepBatch(gen.model, prompts, gen.pad_id)
    batch.prefill()
    batch.select([2, 0, 0])
    got = batch.step(torch.tensor([20, 21, 22]))
    for row, (src, tok) in enumerate([(2, 20), (0, 21), (0, 22)]):
        assert torch.allclose(got[row], unbatched_next_logprobs(gen.model, prompts[src] + [tok]), atol=1e-4)


def test_score_continuations_equals_stepwise_log_probs(gen):
    prompts = prompts_of(gen, TEXTS)
    batch = LockstepBatch(gen.model, prompts, gen.pad_id)
    state = batch.snapshot(batch.prefill())
    conts = [[30, 31, 32], [33], [34, 35]]
    rows = [2, 0, 1]
    got = score_continuations(gen.model, state, rows, conts, gen.pad_id, max_batch=2)
    for row, cont, scores in zip(rows, conts, got):
        ref = [float(unbatched_next_logprobs(gen.model, prompts[row] + cont[:j])[cont[j]]) for j in range(len(cont))]
        assert scores.tolist() == pytest.approx(ref, abs=1e-4)


def suffix_by_continuation(gen, prompts, last):
    """Reference: log p of each prompt's last n tokens by score_continuations after a prefill of the rest."""
    batch = LockstepBatch(gen.model, [p[: len(p) - n] for p, n in zip(prompts, last)], gen.pad_id)
    state = batch.snapshot(batch.prefill())
    return score_continuations(gen.model, state, list(range(len(prompts))), [p[len(p) - n :] for p, n in zip(prompts, last)],
                               gen.pad_id)


def test_a_prefill_scores_the_prompts_last_tokens_as_teacher_forcing_does(gen):
    prompts = prompts_of(gen, TEXTS)
    plain = LockstepBatch(gen.model, prompts, gen.pad_id).prefill()
    for score_last, last in ((4, [4, 4, 4]), ([6, 1, 3], [6, 1, 3])):  # one count for all rows; one per row
        out = LockstepBatch(gen.model, prompts, gen.pad_id).prefill_scored(score_last)
        assert torch.allclose(out.next_logprobs, plain, atol=1e-5)  # the next-token log-probs are unchanged
        assert out.last_logprobs.shape == (3, max(last))
        for row, want in enumerate(suffix_by_continuation(gen, prompts, last)):
            n = last[row]
            assert out.last_logprobs[row, max(last) - n :].tolist() == pytest.approx(want.tolist(), abs=1e-4)
            assert out.last_logprobs[row, : max(last) - n].tolist() == [0.0] * (max(last) - n)  # log 1 before them
    assert LockstepBatch(gen.model, prompts, gen.pad_id).prefill_scored(0).last_logprobs.shape == (3, 0)
    shortest = min(map(len, prompts))
    with pytest.raises(ValueError, match="score_last"):  # the first token has nothing before it
        LockstepBatch(gen.model, prompts, gen.pad_id).prefill_scored(shortest)
    with pytest.raises(ValueError, match="score_last"):
        LockstepBatch(gen.model, prompts, gen.pad_id).prefill_scored([1, 2])


def test_greedy_after_the_callers_prefill_decodes_as_greedy_alone(gen):
    prompts = prompts_of(gen, TEXTS[:2])
    combine = mixture(torch.log(torch.tensor([0.3, 0.7])))
    alone = list(greedy(LockstepBatch(gen.model, prompts, gen.pad_id), combine, gen.eos_ids, 6))
    batch = LockstepBatch(gen.model, prompts, gen.pad_id)
    first = batch.prefill_scored(3).next_logprobs
    got = list(greedy(batch, combine, gen.eos_ids, 6, first_logprobs=first))
    assert [s.token_id for s in got] == [s.token_id for s in alone] and len(alone) > 1
    assert [s.logprob for s in got] == pytest.approx([s.logprob for s in alone], abs=1e-5)


def reference_greedy(model, prompt, n, eos_ids):
    ids, out = list(prompt), []
    for _ in range(n):
        lp = unbatched_next_logprobs(model, ids)
        token = int(lp.argmax())
        if token in eos_ids:
            break
        out.append((token, float(lp[token])))
        ids.append(token)
    return out


def test_greedy_on_one_prompt_is_the_plain_lm(gen):
    prompt = prompts_of(gen, TEXTS[:1])
    steps = list(greedy(LockstepBatch(gen.model, prompt, gen.pad_id), mixture(torch.zeros(1)), gen.eos_ids, 12))
    ref = reference_greedy(gen.model, prompt[0], 12, gen.eos_ids)
    assert [s.token_id for s in steps] == [t for t, _ in ref]
    assert [s.logprob for s in steps] == pytest.approx([lp for _, lp in ref], abs=1e-4)


def test_beam_search_of_width_one_is_greedy(gen):
    prompts = prompts_of(gen, TEXTS)
    prior = torch.log(torch.tensor([0.5, 0.2, 0.3]))
    steps = list(greedy(LockstepBatch(gen.model, prompts, gen.pad_id), mixture(prior), gen.eos_ids, 10))
    batch = LockstepBatch(gen.model, prompts, gen.pad_id)
    (hyps,) = beam_search(batch, batch.prefill(), mixture(prior), 1, 1, gen.eos_ids, 10)
    assert [s.token_id for s in hyps[0].answer_steps] == [s.token_id for s in steps]


def test_beam_search_groups_are_independent_per_prompt(gen):
    prompts = prompts_of(gen, TEXTS)
    batch = LockstepBatch(gen.model, prompts, gen.pad_id)
    together = beam_search(batch, batch.prefill(), single_row, 3, 2, gen.eos_ids, 6)
    for g, prompt in enumerate(prompts):
        alone = LockstepBatch(gen.model, [prompt], gen.pad_id)
        (own,) = beam_search(alone, alone.prefill(), single_row, 1, 2, gen.eos_ids, 6)
        assert [h.token_ids for h in together[g]] == [h.token_ids for h in own]
        assert all(h.group == g for h in together[g])
        for h in together[g]:  # each hypothesis' score is the sum of its tokens' log-probs under its prompt
            ref = sum(float(unbatched_next_logprobs(gen.model, prompt + list(h.token_ids[:j]))[t]) for j, t in enumerate(h.token_ids))
            assert h.logprob == pytest.approx(ref, abs=1e-3)


def test_beam_search_finds_at_least_greedys_score_when_lengths_are_equal(gen):
    prompt = prompts_of(gen, TEXTS[2:])
    steps = list(greedy(LockstepBatch(gen.model, prompt, gen.pad_id), single_row, gen.eos_ids, 3))
    batch = LockstepBatch(gen.model, prompt, gen.pad_id)
    (hyps,) = beam_search(batch, batch.prefill(), single_row, 1, len(gen.tokenizer), gen.eos_ids, 3)
    assert len(steps) == 3 and hyps[0].ended == "length"  # no EOS: all hypotheses have 3 tokens
    assert hyps[0].logprob >= sum(s.logprob for s in steps) - 1e-5


def decode_words(ids):
    return " ".join(f"w{i}" for i in ids)


def test_token_texts_concatenate_to_the_text():
    texts = TokenTexts(decode_words)
    pieces = [p for i in [1, 2, 3] for p in texts.push(i)] + texts.finish()
    assert [p.text for p in pieces] == ["w1", " w2", " w3"]
    assert texts.text == "w1 w2 w3"


def test_stop_string_cuts_the_text_and_holds_back_a_possible_start():
    texts = TokenTexts(decode_words, stop=["w3 w4"])
    assert [p.text for p in texts.push(1)] == ["w1"]
    assert [p.text for p in texts.push(2)] == [" w2"]  # cannot start "w3 w4": released
    assert texts.push(3) == []  # "w3" could begin the stop string: held back
    final = texts.push(4)
    assert texts.stopped
    assert [(p.index, p.text) for p in final] == [(2, " ")]  # cut inside " w3"; " w4" dropped
    assert texts.text == "w1 w2 "
    with pytest.raises(ValueError):
        texts.push(5)


def test_held_back_text_is_released_at_the_end():
    texts = TokenTexts(decode_words, stop=["w3 w4"])
    texts.push(3)
    assert [p.text for p in texts.finish()] == ["w3"]


def test_pieces_of_stops_at_the_first_stop_string():
    pieces = pieces_of(decode_words, [1, 2, 3, 4, 5], stop=["w2"])
    assert [(p.index, p.text) for p in pieces] == [(0, "w1"), (1, " ")]
    assert pieces_of(decode_words, [1, 2], stop=["zzz"])[-1].text == " w2"


def test_kv_cache_stays_exact_when_it_grows_past_its_capacity(gen):
    prompts = prompts_of(gen, TEXTS[:2])
    batch = LockstepBatch(gen.model, prompts, gen.pad_id)
    batch.prefill()
    fed = [5 + (j % 50) for j in range(90)]  # more steps than the first allocation holds
    for j, token in enumerate(fed):
        got = batch.step(torch.tensor([token, token]))
        if j in (0, 70, 89):
            for row in range(2):
                ref = unbatched_next_logprobs(gen.model, prompts[row] + fed[: j + 1])
                assert torch.allclose(got[row], ref, atol=1e-4), (row, j)



class ScriptedBatch:
    """One row whose next token is always the next of ``script`` (the rest of the vocabulary far below)."""

    rows = 1

    def __init__(self, script, vocab):
        self.script, self.vocab, self.steps = list(script), vocab, 0

    def _next(self):
        logprobs = torch.full((1, self.vocab), -20.0)
        logprobs[0, self.script[min(self.steps, len(self.script) - 1)]] = 0.0
        return logprobs

    def prefill(self):
        return self._next()

    def step(self, tokens):
        self.steps += 1
        return self._next()


PIECES = ["", " in", " 17", "2", "9", ".", " more", "nese"]  # 0 = EOS


@pytest.mark.parametrize("script,limit,grace,want,forward_passes", [
    ([1, 2, 3, 4, 5, 6], 3, 8, [1, 2, 3, 4], 5),  # "in 172" + "9": the number is finished, "." is not taken
    ([1, 2, 3, 4, 5, 6], 3, 0, [1, 2, 3], 3),  # finish_word_tokens = 0: cut at the limit, as before
    ([1, 2, 3, 4, 4, 4, 4], 3, 2, [1, 2, 3, 4, 4], 5),  # at most finish_word_tokens more
    ([1, 5, 6, 7], 2, 8, [1, 5], 2),  # the limit falls after punctuation: no extra forward pass
    ([1, 2, 0], 2, 8, [1, 2], 3),  # EOS ends it
    ([1, 2, 6], 2, 8, [1, 2], 3),  # " more" starts a new word
])
def test_greedy_finishes_the_word_it_is_writing_at_the_limit(script, limit, grace, want, forward_passes):
    batch = ScriptedBatch(script, len(PIECES))
    words = WordEnds(lambda ids: "".join(PIECES[i] for i in ids))
    steps = list(greedy(batch, mixture(torch.zeros(1)), {0}, limit, words=words, finish_word_tokens=grace))
    assert [s.token_id for s in steps] == want
    assert batch.steps + 1 == forward_passes  # the prefill and each step: one to see the next token past the limit only
    # when the last token ended inside a word


def test_finish_word_tokens_is_validated():
    from assistant.config import AnswerConfig
    from knowledge.errors import ConfigError

    assert AnswerConfig().finish_word_tokens == 8
    with pytest.raises(ConfigError, match="finish_word_tokens must be >= 0"):
        AnswerConfig(finish_word_tokens=-1)
