"""Continuous batching: several answers' rows in one shared lockstep batch compute exactly what each
would alone, whoever joins, lags or leaves (tiny random LM, brute-force references)."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from assistant.batching import BatchScheduler
from assistant.lockstep import LockstepBatch, can_extend, score_continuations
from tests import tinylm

TEXTS = [
    "ada lovelace was born in london",
    "who",
    "marie curie discovered radium and polonium in paris . she was born in warsaw",
    "alan turing was a mathematician",
    "what is radium",
]


@pytest.fixture(scope="module")
def gen():
    return tinylm.make_generator()


def prompts_of(gen, texts):
    return [gen.render([{"role": "user", "content": t}]) for t in texts]


def private_run(gen, prompts, fed):
    """Reference: the prompts in a batch of their own; fed[j] = the tokens of step j, one per row."""
    batch = LockstepBatch(gen.model, prompts, gen.pad_id)
    out = [batch.prefill()]
    for tokens in fed:
        out.append(batch.step(torch.tensor(tokens)))
    return out


def feeds(rows: int, steps: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, 60, (steps, rows), generator=g).tolist()


def shared_run(scheduler, prompts, fed, results, key, pause: float = 0.0, start: threading.Event | None = None):
    if start is not None:
        start.wait(10)
    with scheduler.batch(prompts) as batch:
        out = [batch.prefill()]
        for tokens in fed:
            if pause:
                time.sleep(pause)
            out.append(batch.step(torch.tensor(tokens)))
    results[key] = out


def assert_same(got, ref):
    assert len(got) == len(ref)
    for j, (a, b) in enumerate(zip(got, ref)):
        assert a.shape == b.shape, j
        # fp32 sums over other batch shapes differ by a few 1e-4 on log-probs near -20 (AVX-512 kernels); a wrong
        # row or cache would differ by whole nats
        assert torch.allclose(a, b, atol=1e-3), (j, float((a - b).abs().max()))


def run_threads(targets):
    threads = [threading.Thread(target=t) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()


def test_the_packaged_kind_of_model_can_share_batches(gen):
    assert can_extend(gen.model)


def test_answers_decoded_together_match_their_private_runs_and_share_passes(gen):
    scheduler = BatchScheduler(gen.model, gen.pad_id, gather_seconds=0.05)
    members = [prompts_of(gen, TEXTS[:3]), prompts_of(gen, TEXTS[3:]), prompts_of(gen, TEXTS[1:2])]
    fed = [feeds(len(p), 8, seed) for seed, p in enumerate(members)]
    results: dict[int, list] = {}
    start = threading.Event()
    run_threads([lambda i=i: shared_run(scheduler, members[i], fed[i], results, i, start=start)
                 for i in range(len(members))] + [start.set])
    for i, prompts in enumerate(members):
        assert_same(results[i], private_run(gen, prompts, fed[i]))
    # 3 answers x 8 steps alone would be 24 step passes (+ 3 prefills); together far fewer
    assert scheduler.passes < 3 + 24 - 8
    assert scheduler.live_rows == 0
    scheduler.close()


def test_a_member_joining_midway_and_one_lagging_behind_stay_exact(gen):
    scheduler = BatchScheduler(gen.model, gen.pad_id, gather_seconds=0.005)
    first, late, slow = prompts_of(gen, TEXTS[2:4]), prompts_of(gen, TEXTS[:1]), prompts_of(gen, TEXTS[4:])
    fed = {"first": feeds(2, 12, 1), "late": feeds(1, 6, 2), "slow": feeds(1, 5, 3)}
    results: dict[str, list] = {}

    def late_joiner():
        time.sleep(0.05)  # the first member is decoding by now
        shared_run(scheduler, late, fed["late"], results, "late")

    run_threads([
        lambda: shared_run(scheduler, first, fed["first"], results, "first", pause=0.01),
        late_joiner,
        lambda: shared_run(scheduler, slow, fed["slow"], results, "slow", pause=0.03),  # misses steps: holes
    ])
    assert_same(results["first"], private_run(gen, first, fed["first"]))
    assert_same(results["late"], private_run(gen, late, fed["late"]))
    assert_same(results["slow"], private_run(gen, slow, fed["slow"]))
    scheduler.close()


def test_select_and_snapshot_of_one_member_leave_the_others_alone(gen):
    scheduler = BatchScheduler(gen.model, gen.pad_id, gather_seconds=0.05)
    other_prompts = prompts_of(gen, TEXTS[3:5])
    other_fed = feeds(2, 4, 7)
    prompts = prompts_of(gen, TEXTS[:3])
    results: dict[str, object] = {}
    joined = threading.Event()
    other_done = threading.Event()

    def beam_like():
        with scheduler.batch(prompts) as batch:
            first = batch.prefill()
            joined.set()
            state = batch.snapshot(first)
            batch.select([2, 0, 0])
            results["beam"] = [first, batch.step(torch.tensor([20, 21, 22]))]
            results["state"] = state
            other_done.wait(30)

    def other():
        joined.wait(30)
        shared_run(scheduler, other_prompts, other_fed, results, "other")
        other_done.set()

    run_threads([beam_like, other])
    ref = LockstepBatch(gen.model, prompts, gen.pad_id)
    ref_first = ref.prefill()
    ref_state = ref.snapshot(ref_first)
    ref.select([2, 0, 0])
    assert_same(results["beam"], [ref_first, ref.step(torch.tensor([20, 21, 22]))])
    assert_same(results["other"], private_run(gen, other_prompts, other_fed))
    conts = [[7, 8, 9], [10, 11]]
    got = score_continuations(gen.model, results["state"], [0, 2], conts, gen.pad_id)
    want = score_continuations(gen.model, ref_state, [0, 2], conts, gen.pad_id)
    assert_same(got, want)
    scheduler.close()


def scored_by_continuation(gen, prompts, n):
    """Reference: log p of each prompt's last n tokens by score_continuations after a prefill of the rest."""
    batch = LockstepBatch(gen.model, [p[:-n] for p in prompts], gen.pad_id)
    state = batch.snapshot(batch.prefill())
    return torch.stack(score_continuations(gen.model, state, list(range(len(prompts))), [p[-n:] for p in prompts],
                                           gen.pad_id))  # (rows, n)


def test_each_member_gets_its_own_rows_last_tokens_scored(gen):
    """Members joining in one pass ask to score different numbers of their prompts' last tokens (0: none);
    one joins later while another decodes. Each gets its own rows' log-probs, as a prefill of its own would."""
    scheduler = BatchScheduler(gen.model, gen.pad_id, gather_seconds=0.05)
    members = {"a": (prompts_of(gen, TEXTS[:2]), 5), "b": (prompts_of(gen, TEXTS[2:4]), 0),
               "c": (prompts_of(gen, TEXTS[4:]), 3), "late": (prompts_of(gen, TEXTS[1:3]), 4)}
    fed = {key: feeds(len(prompts), 6, i) for i, (key, (prompts, _)) in enumerate(members.items())}
    results: dict[str, list] = {}
    start, decoding = threading.Event(), threading.Event()

    def member(key):
        prompts, n = members[key]
        (decoding if key == "late" else start).wait(10)
        with scheduler.batch(prompts) as batch:
            first = batch.prefill_scored(n)
            out = [first.next_logprobs]
            for j, tokens in enumerate(fed[key]):
                if key == "a" and j == 1:
                    decoding.set()  # the late member joins now
                out.append(batch.step(torch.tensor(tokens)))
                time.sleep(0.01)
        results[key] = (first.last_logprobs, out)

    joins: list[int] = []  # members per prefill pass
    join = scheduler._join
    scheduler._join = lambda calls: (joins.append(len(calls)), join(calls))
    run_threads([lambda key=key: member(key) for key in members] + [start.set])
    assert joins == [3, 1]
    for key, (prompts, n) in members.items():
        scored, out = results[key]
        assert scored.shape == (len(prompts), n)
        if n:
            assert_same([scored], [scored_by_continuation(gen, prompts, n)])
        assert_same(out, private_run(gen, prompts, fed[key]))
    with pytest.raises(ValueError, match="score_last"):  # a whole prompt: its first token has nothing before it
        scheduler.batch(prompts_of(gen, TEXTS[1:2])).prefill_scored(6)
    scheduler.close()


def test_rows_beyond_the_limit_wait_for_room(gen):
    scheduler = BatchScheduler(gen.model, gen.pad_id, max_rows=3, gather_seconds=0.005)
    peak = [0]
    members = [prompts_of(gen, TEXTS[:2]), prompts_of(gen, TEXTS[2:4]), prompts_of(gen, TEXTS[4:])]
    fed = [feeds(len(p), 4, 10 + i) for i, p in enumerate(members)]
    results: dict[int, list] = {}

    def watch():
        while len(results) < 3:
            peak[0] = max(peak[0], scheduler.live_rows)
            time.sleep(0.001)

    run_threads([lambda i=i: shared_run(scheduler, members[i], fed[i], results, i, pause=0.01)
                 for i in range(3)] + [watch])
    assert peak[0] <= 3
    for i, prompts in enumerate(members):
        assert_same(results[i], private_run(gen, prompts, fed[i]))
    scheduler.close()


def test_a_failed_pass_fails_its_answers_and_the_next_answer_works(gen):
    scheduler = BatchScheduler(gen.model, gen.pad_id, gather_seconds=0.005)
    prompts = prompts_of(gen, TEXTS[:2])
    with scheduler.batch(prompts) as batch:
        batch.prefill()
        with pytest.raises(IndexError):
            batch.step(torch.tensor([10**6, 5]))  # not a token of the vocabulary
        with pytest.raises(RuntimeError, match="dropped"):
            batch.step(torch.tensor([5, 5]))
    fed = feeds(2, 3, 4)
    results: dict[str, list] = {}
    shared_run(scheduler, prompts, fed, results, "again")
    assert_same(results["again"], private_run(gen, prompts, fed))
    scheduler.close()


def test_a_closed_scheduler_refuses_new_work(gen):
    scheduler = BatchScheduler(gen.model, gen.pad_id)
    scheduler.close()
    with pytest.raises(RuntimeError, match="closed"):
        scheduler.batch(prompts_of(gen, TEXTS[:1])).prefill()


def service_with(tmp_path, parallel: int):
    from assistant.config import AnswerConfig
    from knowledge.kb import KnowledgeBase
    from tests.conftest import small_config
    from tests.fakes import HashingEmbedder
    from tests.ui_fixtures import DOCS
    from ui.service import Service

    folder = tmp_path / "knowledge"
    folder.mkdir(parents=True)
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    kb = KnowledgeBase.open(small_config(), tmp_path / "data", folder=folder, embedder=HashingEmbedder())
    kb.sync()
    return Service(kb, tinylm.make_generator(), AnswerConfig(k=2, max_new_tokens=8), parallel_answers=parallel,
                   batch_gather_ms=50)


QUESTIONS = ["where was marie curie born ?", "who wrote the first program ?", "what did marie curie discover ?",
             "who was alan turing ?", "tell me about ada lovelace"]


def test_the_server_answers_concurrent_questions_as_it_answers_them_one_by_one(tmp_path):
    alone = service_with(tmp_path / "one", 1)
    together = service_with(tmp_path / "many", 4)
    assert alone.generator.batching is None and together.generator.batching is not None
    want = {q: alone.ask(q) for q in QUESTIONS}
    got: dict[str, object] = {}
    run_threads([lambda q=q: got.__setitem__(q, together.ask(q)) for q in QUESTIONS])
    assert together.queue.peak_running > 1
    assert together.generator.batching.passes < sum(len(a.tokens) + 1 for a in want.values())
    for q in QUESTIONS:
        assert got[q].text == want[q].text, q
        for a, b in zip(got[q].tokens, want[q].tokens):
            assert a.text == b.text
            assert (a.support.label, a.support.chunk) == (b.support.label, b.support.chunk)
            assert a.support.pmi == pytest.approx(b.support.pmi, abs=1e-3)  # fp32 sums in other batch shapes (see assert_same)
            assert a.posterior == pytest.approx(b.posterior, abs=1e-4)
    for service in (alone, together):
        service.kb.close()


def test_modes_that_hook_the_model_run_alone(tmp_path, monkeypatch):
    service = service_with(tmp_path, 4)
    seen: list[tuple[str, bool]] = []
    real = service.queue.stream
    monkeypatch.setattr(service.queue, "stream", lambda produce, exclusive=False: (
        seen.append(exclusive), real(produce, exclusive))[1])
    for mode in ("rag-token", "rag-sequence", "knn-lm"):
        stream = service.stream("where was marie curie born ?", mode=mode)
        stream.cancel()
    assert seen == [False, False, True]
    deadline = time.monotonic() + 60
    while service.queue.waiting and time.monotonic() < deadline:  # let the workers finish before closing
        time.sleep(0.05)
    service.kb.close()
