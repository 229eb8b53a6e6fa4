"""kNN-LM: the math, the datastore (search, persistence, sync with the knowledge store, IVF-PQ) and
the mode's contracts on a tiny random LM, with limits computable by hand."""

import dataclasses
import json
import math
import threading

import numpy as np
import pytest
import torch

from assistant.config import AnswerConfig, ModeTables, KnnConfig
from assistant.engine import DialogueEngine, load_mode
from assistant.knn import sync as knn_sync
from assistant.knn.build import chunk_entries, model_fingerprint, text_entries, tokenize
from assistant.knn.datastore import Datastore
from assistant.knn.keys import KeyCapture, encode, windows
from assistant.knn.math import interpolate, knn_distribution, knn_share, knn_target_logprob, perplexity
from assistant.knn.perplexity import datastore_from_text, evaluate_perplexity
from assistant.knn.segments import ChunkEntries
from assistant.knn.sync import open_datastore, sync_datastore
from assistant.lockstep import LockstepBatch
from assistant.modes.base import ModeResources
from assistant.modes.closed_book import ClosedBookMode
from assistant.modes.knn_lm import KnnLmMode, KnnLmSettings
from knowledge.errors import NotReadyError
from tests import tinylm

TEXT = ("ada lovelace was born in london . she wrote the first program . marie curie was born in warsaw . "
        "she discovered radium and polonium . alan turing was born in london . he was a mathematician . ")
SMALL = KnnConfig(context_tokens=16, stride_tokens=8)  # tiny windows: the sliding path runs in tests


@pytest.fixture(scope="module")
def gen():
    return tinylm.make_generator()


def cfg(knn=None, **kw):
    """Shared settings ``kw``; ``knn``: the [answer.knn-lm] table (neighbours = 16 unless given)."""
    return AnswerConfig(**{"max_new_tokens": 8, **kw}, modes=ModeTables({"knn-lm": {"neighbours": 16, **(knn or {})}}))


def entries(chunk_id, keys, values, source="doc.md", text="x"):
    keys = np.asarray(keys, dtype=np.float32)
    n = len(keys)
    return ChunkEntries(chunk_id, source, text, keys, np.asarray(values), np.arange(1, n + 1), np.zeros(n, dtype=int))


def text_store(gen, tmp_path, text=TEXT, config=SMALL):
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    return datastore_from_text(gen, path, tmp_path / "ds", config)


# -- the math --------------------------------------------------------------------------------------
def test_knn_distribution_by_hand():
    d, v = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([5, 7, 5])
    p = knn_distribution(d, v, 10, temperature=1.0).exp()
    z = math.exp(-1) + math.exp(-2) + math.exp(-4)
    assert p[5] == pytest.approx((math.exp(-1) + math.exp(-4)) / z)
    assert p[7] == pytest.approx(math.exp(-2) / z)
    assert p.sum() == pytest.approx(1.0) and p[[0, 1, 2, 3, 4, 6, 8, 9]].sum() == 0
    p2 = knn_distribution(d, v, 10, temperature=2.0).exp()  # T flattens the weights
    assert p2[7] == pytest.approx(math.exp(-1) / (math.exp(-0.5) + math.exp(-1) + math.exp(-2)))
    batched = knn_distribution(torch.stack([d, d]), torch.stack([v, v]), 10)  # (2, V)
    assert torch.equal(batched[0], batched[1]) and torch.allclose(batched[0].exp(), p)
    target = knn_target_logprob(d[None], v[None], torch.tensor([7]), 1.0)
    assert target.item() == pytest.approx(math.log(p[7].item()))
    assert knn_distribution(torch.zeros(0), torch.zeros(0, dtype=torch.long), 4).isinf().all()


def test_interpolate_limits_and_mixture():
    lm = torch.log_softmax(torch.randn(2, 50), -1)
    knn = knn_distribution(torch.rand(2, 8) * 10, torch.randint(0, 50, (2, 8)), 50)
    assert torch.equal(interpolate(lm, knn, 0.0), lm)  # λ = 0: the LM exactly
    assert torch.equal(interpolate(lm, knn, 1.0), knn.float())  # λ = 1: p_kNN exactly (-inf stays)
    mixed = interpolate(lm, knn, 0.25)
    assert torch.allclose(mixed.exp(), 0.25 * knn.exp().float() + 0.75 * lm.exp(), atol=1e-6)
    assert torch.allclose(mixed.exp().sum(-1), torch.ones(2))
    w = int(knn[0].argmax())
    share = knn_share(mixed[0, w], knn[0, w], 0.25)
    assert share.item() == pytest.approx(0.25 * knn[0, w].exp().item() / mixed[0, w].exp().item(), rel=1e-5)
    assert perplexity(torch.log(torch.tensor([0.5, 0.5]))) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        interpolate(lm, knn, 1.5)


# -- keys --------------------------------------------------------------------------------------------
def test_keys_are_the_last_mlp_input_after_its_layer_norm(gen):
    seen = {}
    norm = gen.model.model.layers[-1].post_attention_layernorm
    handle = norm.register_forward_hook(lambda m, a, out: seen.update(out=out.detach()))
    ids = torch.tensor([tokenize(gen, TEXT)[0][:12]])
    try:
        with KeyCapture(gen.model) as cap:
            gen.model(input_ids=ids)
    finally:
        handle.remove()
    assert torch.equal(cap.keys, seen["out"])


def test_windows_give_every_position_one_key_with_context(gen):
    for n in (2, 15, 16, 17, 40, 100):
        ws = windows(n, 16, 8)
        kept = [p for w in ws for p in range(w.first, w.end - 1)]
        assert kept == list(range(n - 1))
        assert all(w.end - w.start <= 16 for w in ws)
        assert all(w.first - w.start >= 16 - 8 - 1 for w in ws[1:])
    ids = tokenize(gen, TEXT)[0]
    parts = list(encode(gen.model, ids, 16, 8, with_logprobs=True))
    positions = torch.cat([p.positions for p in parts])
    assert positions.tolist() == list(range(len(ids) - 1))
    assert torch.cat([p.values for p in parts]).tolist() == ids[1:]
    with torch.no_grad():  # the first window's log-probs are the plain LM's
        lp = torch.log_softmax(gen.model(input_ids=torch.tensor([ids[:16]])).logits[0], -1)
    assert torch.allclose(parts[0].lm_logprobs, lp[:-1].gather(-1, torch.tensor(ids[1:16])[:, None])[:, 0], atol=1e-5)


def test_decoding_queries_match_datastore_keys(gen):
    """The key of a context computed while decoding (KV cache, one token at a time) is the key the
    datastore stores for the same context."""
    ids = tokenize(gen, TEXT)[0][:10]
    batch = LockstepBatch(gen.model, [ids[:6]], gen.pad_id)
    with KeyCapture(gen.model) as cap:
        batch.prefill()
        queries = [cap.last()[0]]
        for token in ids[6:9]:
            batch.step(torch.tensor([token]))
            queries.append(cap.last()[0])
    stored = torch.cat([p.keys for p in encode(gen.model, ids, 64, 32)])  # (9, D)
    assert torch.allclose(torch.stack(queries), stored[5:9], atol=1e-4)


# -- the datastore -------------------------------------------------------------------------------------
def test_three_entry_datastore_gives_hand_computed_p_knn(tmp_path):
    ds = Datastore(tmp_path / "ds", "fp", 2, KnnConfig())
    ds.apply([entries("c1", [[0, 0], [3, 0], [0, 2]], [5, 7, 5])])
    found = ds.search(np.array([[1.0, 0.0]]), 3)
    assert found.distances[0].tolist() == [1.0, 4.0, 5.0]  # squared L2 to (0,0), (3,0), (0,2)
    assert found.values[0].tolist() == [5, 7, 5]
    p = knn_distribution(torch.from_numpy(found.distances[0]), torch.from_numpy(found.values[0]), 8).exp()
    z = math.exp(-1) + math.exp(-4) + math.exp(-5)
    assert p[5].item() == pytest.approx((math.exp(-1) + math.exp(-5)) / z)
    assert p[7].item() == pytest.approx(math.exp(-4) / z)
    more = ds.search(np.array([[1.0, 0.0]]), 5)  # fewer entries than k: the rest are marked missing
    assert more.ids[0, 3:].tolist() == [-1, -1] and np.isinf(more.distances[0, 3:]).all()


def test_persistence_round_trip_and_tombstones(tmp_path):
    rng = np.random.default_rng(0)
    ds = Datastore(tmp_path / "ds", "fp", 4, KnnConfig(compact_dead_share=0.9))
    ds.apply([entries(f"c{i}", rng.normal(size=(5, 4)), rng.integers(0, 9, 5), text=f"text {i}") for i in range(4)])
    ds.apply([entries("c9", rng.normal(size=(3, 4)), [1, 2, 3])], removed=["c1"], complete=True)
    q = rng.normal(size=(3, 4)).astype(np.float32)
    before = ds.search(q, 6)
    assert len(ds) == 18 and ds.chunk_ids() == {"c0", "c2", "c3", "c9"}
    info = ds.info(int(before.ids[0, 0]))
    ds.close()
    again = Datastore(tmp_path / "ds", "fp", 4, KnnConfig(compact_dead_share=0.9))
    after = again.search(q, 6)
    assert np.array_equal(before.ids, after.ids) and np.allclose(before.distances, after.distances)
    assert again.info(int(after.ids[0, 0])) == info and again.complete
    removed_keys = set(map(int, before.ids.ravel()))
    assert all(again.info(i).chunk.chunk_id != "c1" for i in removed_keys)
    again.compact()  # rewrite the live rows: same neighbours (new ids), same order
    compacted = again.search(q, 6)
    assert np.allclose(compacted.distances, before.distances) and np.array_equal(compacted.values, before.values)
    assert len(list((tmp_path / "ds").glob("seg-*"))) == 1
    assert {p.name for p in (tmp_path / "ds").iterdir()} == {"meta.json", "writer.lock", "seg-000003"}
    assert not any(p.suffix == ".npy" and p.stat().st_size == 0 for p in (tmp_path / "ds").rglob("*"))
    keys = np.load(next((tmp_path / "ds").glob("seg-*")) / "keys.npy", allow_pickle=False, mmap_mode="r")
    assert keys.dtype == np.float16 and keys.shape == (18, 4)


def test_another_generator_empties_the_datastore(tmp_path):
    ds = Datastore(tmp_path / "ds", "model-a", 2, KnnConfig())
    ds.apply([entries("c1", [[0, 0]], [1])], complete=True)
    ds.close()
    other = Datastore(tmp_path / "ds", "model-b", 2, KnnConfig())
    assert len(other) == 0 and not other.complete and other.chunk_ids() == set()


def test_a_second_process_opens_read_only(tmp_path):
    ds = Datastore(tmp_path / "ds", "fp", 2, KnnConfig())
    ds.apply([entries("c1", [[0, 0]], [1])], complete=True)
    reader = Datastore(tmp_path / "ds", "fp", 2, KnnConfig())  # the flock is held by ``ds``
    assert not reader.writable and reader.search(np.zeros((1, 2)), 1).values[0, 0] == 1
    with pytest.raises(Exception, match="read-only"):
        reader.apply(removed=["c1"])


def test_ivfpq_above_the_threshold_with_exact_rerank(tmp_path):
    rng = np.random.default_rng(1)
    config = KnnConfig(exact_max_entries=500, nprobe=64, pq_subquantizers=4, compact_dead_share=0.9)
    centres = rng.normal(size=(20, 8)) * 5
    keys = (centres[rng.integers(0, 20, 3000)] + rng.normal(size=(3000, 8))).astype(np.float32)
    ds = Datastore(tmp_path / "ds", "fp", 8, config)
    ds.apply([entries("small", keys[:100], np.arange(100))])
    assert ds.index_kind == "exact"
    ds.apply([entries(f"c{i}", keys[i * 100 : (i + 1) * 100], np.arange(100) + i * 100) for i in range(1, 30)])
    assert ds.index_kind == "ivfpq" and len(ds) == 3000
    q = keys[[5, 1234, 2999]] + 0.01
    found = ds.search(q, 10)
    stored = keys.astype(np.float16).astype(np.float32)  # the datastore keeps fp16 keys
    exact = ((stored[None] - q[:, None]) ** 2).sum(-1)  # (3, 3000)
    assert found.values[:, 0].tolist() == [5, 1234, 2999]  # values are the row numbers here
    got = np.take_along_axis(exact, found.values, 1)
    assert np.allclose(found.distances, got, rtol=1e-5, atol=1e-5)  # re-ranked: exact distances
    ds.apply(removed=["c12"])
    assert 1234 not in ds.search(q, 10).values
    ds.close()
    reopened = Datastore(tmp_path / "ds", "fp", 8, config)
    assert reopened.index_kind == "ivfpq" and len(list((tmp_path / "ds").glob("*.faiss"))) == 1
    assert reopened.search(q, 10).values[[0, 2], 0].tolist() == [5, 2999]
    reopened.close()
    exact = Datastore(tmp_path / "ds", "fp", 8, dataclasses.replace(config, exact_max_entries=10_000))
    assert exact.index_kind == "exact" and not list((tmp_path / "ds").glob("*.faiss"))  # settings changed
    assert exact.search(q, 10).values[[0, 2], 0].tolist() == [5, 2999]


# -- sync with the knowledge store ---------------------------------------------------------------------
def test_sync_adds_and_removes_exactly_the_changed_chunks(gen, open_kb, folder, tmp_path, monkeypatch):
    (folder / "a.txt").write_text("ada lovelace was born in london . she wrote the first program .")
    (folder / "b.txt").write_text("marie curie was born in warsaw . she discovered radium and polonium .")
    kb = open_kb()
    kb.sync()
    ds = open_datastore(tmp_path / "knn", gen, SMALL)
    encoded = []
    real = knn_sync.chunk_entries
    monkeypatch.setattr(knn_sync, "chunk_entries", lambda g, chunks, c: encoded.extend(x.chunk_id for x in chunks) or real(g, chunks, c))
    report = sync_datastore(kb.store, ds, gen, SMALL)
    truth = kb.store.manifest.all_chunk_ids()
    assert ds.chunk_ids() == truth and set(encoded) == truth and ds.complete
    assert report.added_chunks == len(truth) and report.removed_chunks == 0
    assert len(ds) == sum(len(tokenize(gen, c.text)[0]) - 1 for c in kb.store.manifest.chunks(truth).values())

    encoded.clear()  # an unchanged knowledge base: nothing to do
    assert sync_datastore(kb.store, ds, gen, SMALL).added_chunks == 0 and encoded == []

    old_b = kb.store.manifest.chunk_ids_of("b.txt")
    (folder / "b.txt").write_text("marie curie was born in paris . she discovered radium .")
    kb.sync()
    new_b = kb.store.manifest.chunk_ids_of("b.txt")
    report = sync_datastore(kb.store, ds, gen, SMALL)
    assert set(encoded) == new_b - old_b  # only the edited file's new chunks were encoded
    assert report.removed_chunks == len(old_b - new_b)
    assert ds.chunk_ids() == kb.store.manifest.all_chunk_ids()

    (folder / "a.txt").unlink()
    kb.sync()
    encoded.clear()
    report = sync_datastore(kb.store, ds, gen, SMALL)
    assert encoded == [] and ds.chunk_ids() == new_b
    found = ds.search(np.zeros((1, 32), dtype=np.float32), 200)
    assert {ds.info(int(i)).chunk.chunk_id for i in found.ids[0] if i >= 0} <= new_b


def test_mode_is_not_ready_while_the_datastore_is_built(gen, open_kb, folder, tmp_path, monkeypatch):
    (folder / "a.txt").write_text("ada lovelace was born in london . she wrote the first program .")
    kb = open_kb()
    kb.sync()
    release = threading.Event()
    real = knn_sync.chunk_entries

    def slow(g, chunks, c):
        release.wait(10)
        return real(g, chunks, c)

    monkeypatch.setattr(knn_sync, "chunk_entries", slow)
    resources = ModeResources(kb.store, tmp_path / "data")
    engine = DialogueEngine(tinylm.OverlapRetriever([]), gen, cfg(mode="knn-lm"), resources)
    total = len(kb.store.manifest.all_chunk_ids())
    with pytest.raises(NotReadyError, match=rf"being built: 0 of {total} chunks; try again shortly or use --mode rag-token"):
        engine.ask("who was ada lovelace ?")
    release.set()
    service = knn_sync.datastore_service(tmp_path / "data", kb.store, gen, KnnConfig())
    service.wait(10)
    answer = engine.ask("who was ada lovelace ?")
    assert answer.mode == "knn-lm" and answer.tokens
    assert (tmp_path / "data" / "knn" / "meta.json").exists()
    # a one-file edit later: the question waits for the short update, then answers with it
    (folder / "c.txt").write_text("alan turing was born in london .")
    kb.sync()
    engine.ask("who was alan turing ?")
    assert service.datastore.chunk_ids() == kb.store.manifest.all_chunk_ids()
    service.close()


def test_without_a_data_dir_the_mode_says_what_it_needs(gen):
    with pytest.raises(NotReadyError, match="needs a data dir"):
        load_mode("knn-lm", gen, cfg()).answer("who ?", (), [])


# -- the mode's contracts -------------------------------------------------------------------------------
def test_lambda_zero_is_the_plain_lm(gen, tmp_path):
    ds = text_store(gen, tmp_path)
    knn = list(KnnLmMode(gen, cfg({"lambda": 0.0}), ds).stream("who was ada lovelace ?", (), []))
    plain = list(ClosedBookMode(gen, cfg()).stream("who was ada lovelace ?", (), []))
    assert [(t.text, t.prob) for t in knn[:-1]] == [(t.text, t.prob) for t in plain[:-1]]
    assert knn[-1].text == plain[-1].text and all(t.extra.share == 0.0 for t in knn[:-1])


def test_lambda_one_is_the_knn_distribution(gen, tmp_path):
    ds = text_store(gen, tmp_path)
    config = cfg({"lambda": 1.0, "neighbours": 8, "temperature": 3.0})
    mode = KnnLmMode(gen, config, ds)
    prompt = mode.generator.render([{"role": "system", "content": config.system_prompt},
                                    {"role": "user", "content": "who was ada lovelace ?"}])
    answer = mode.answer("who was ada lovelace ?", (), [])
    ids = list(prompt)
    for token in answer.tokens:  # each token is the argmax of p_kNN of its context, with p = p_kNN
        with KeyCapture(gen.model) as cap, torch.no_grad():
            gen.model(input_ids=torch.tensor([ids]))
        found = ds.search(cap.last().numpy(), 8)
        p_knn = knn_distribution(torch.from_numpy(found.distances[0]), torch.from_numpy(found.values[0]),
                                 gen.model.config.vocab_size, 3.0).exp()
        w = int(p_knn.argmax())
        assert token.prob == pytest.approx(p_knn[w].item(), rel=1e-4)
        assert token.extra.share == pytest.approx(1.0)
        neighbours = token.extra.neighbours
        assert neighbours and all(gen.tokenizer.decode([w]).strip() in n.text[n.text_offset:] for n in neighbours)
        ids.append(w)
    assert answer.text == "".join(t.text for t in answer.tokens)


def test_token_provenance_json(gen, tmp_path):
    ds = text_store(gen, tmp_path)
    config = cfg({"lambda": 0.5, "neighbours_shown": 2})
    answer = KnnLmMode(gen, config, ds).answer("who was ada lovelace ?", (), [])
    tokens = answer.to_json()["tokens"]
    assert tokens and all(0.0 <= t["knn_share"] <= 1.0 for t in tokens)
    some = next(t for t in tokens if t["neighbours"])
    n = some["neighbours"][0]
    assert set(n) == {"chunk_id", "source", "position", "start", "distance", "weight", "text", "text_offset"}
    assert n["source"] == "corpus.txt" and n["chunk_id"].startswith("corpus.txt#") and len(some["neighbours"]) <= 2
    distances = [x["distance"] for x in some["neighbours"]]
    assert distances == sorted(distances)
    json.dumps(answer.to_json())


def test_retrieval_conditioned_prompt_holds_the_chunks(gen, tmp_path):
    ds = text_store(gen, tmp_path)
    chunks = tinylm.make_chunks(["ada lovelace wrote the first program", "marie curie discovered radium"])
    engine = DialogueEngine(tinylm.OverlapRetriever(chunks), gen, cfg({"retrieval_conditioned": True}, k=2))
    engine._modes["knn-lm"] = KnnLmMode(gen, engine.config, ds)
    answer = engine.ask("who wrote the first program ?", mode="knn-lm")
    assert [c.source for c in answer.chunks] == ["doc0.md", "doc1.md"]
    unconditioned = DialogueEngine(tinylm.OverlapRetriever(chunks), gen, cfg(k=2))
    unconditioned._modes["knn-lm"] = KnnLmMode(gen, unconditioned.config, ds)
    assert unconditioned.ask("who wrote the first program ?", mode="knn-lm").chunks == ()
    assert unconditioned.retriever.queries == []  # not conditioned: no retrieval at all


def test_a_datastore_of_the_text_itself_drives_perplexity_towards_one(gen, tmp_path):
    ds = text_store(gen, tmp_path)
    result = evaluate_perplexity(gen, ds, TEXT, [0.25, 1.0], k=8, temperature=0.01, config=SMALL)
    ids = tokenize(gen, TEXT)[0]
    assert result.tokens == len(ids) - 1
    knn = dict(result.knn)
    assert knn[1.0] < 1.01 and result.base > 10 and knn[0.25] < result.base
    # p(w) = λ p_kNN(w) + (1 - λ) p_LM(w) >= λ p_kNN(w), and p_kNN of the true next token is ~1 here: each
    # token's probability is at least ~0.25, so the perplexity is at most ~1 / 0.25
    assert knn[0.25] <= 1 / 0.25 * 1.01
    assert result.to_json() == {"tokens": result.tokens, "base": result.base, "knn": {"0.25": knn[0.25], "1": knn[1.0]}}


def test_text_entries_cover_every_position_once(gen):
    parts = list(text_entries(gen, TEXT, "corpus.txt", SMALL))
    ids, offsets = tokenize(gen, TEXT)
    assert np.concatenate([p.values for p in parts]).tolist() == ids[1:]
    for p in parts:  # char offsets point into the pseudo-chunk's text at the value token
        for v, c in zip(p.values, p.char_positions):
            assert p.text[c:].startswith(gen.tokenizer.convert_ids_to_tokens(int(v)))
    assert model_fingerprint(gen.model) == model_fingerprint(gen.model)
    assert model_fingerprint(tinylm.make_model(len(gen.tokenizer), seed=1)) != model_fingerprint(gen.model)


def test_the_fingerprint_tells_every_generator_precision_apart():
    from assistant.generator import convert

    size = len(tinylm.make_tokenizer())
    prints = {dtype: model_fingerprint(convert(tinylm.make_model(size), dtype)) for dtype in
              ("float32", "bfloat16", "int8")}
    assert len(set(prints.values())) == 3, prints  # keys from one precision are not reused by another
    assert prints["float32"] == model_fingerprint(tinylm.make_model(size))


def test_chunk_entries_long_chunks_slide(gen):
    long_text = " ".join([TEXT] * 2)
    one = chunk_entries(gen, tinylm.make_chunks([long_text, "ada"]), SMALL)
    assert len(one[0].values) == len(tokenize(gen, long_text)[0]) - 1 and len(one[1].values) == 0
    wide = chunk_entries(gen, tinylm.make_chunks([long_text]), dataclasses.replace(SMALL, context_tokens=512, stride_tokens=256))
    assert np.array_equal(one[0].values, wide[0].values)
    assert np.allclose(one[0].keys[:15], wide[0].keys[:15], atol=1e-4)  # the first window is the same context


# -- the real model -------------------------------------------------------------------------------------
@pytest.mark.real_models
def test_real_generator_datastore_lowers_perplexity_of_its_own_domain(tmp_path):
    from assistant.config import GeneratorConfig
    from assistant.generator import Generator

    generator = Generator.from_config(GeneratorConfig())
    text = ("The Zorblax Festival is held every year in the town of Quillhaven. It was founded in 1873 by the "
            "brewer Henrietta Malvern. The Malvern brewery produced a dark ale called Midnight Anchor. ") * 3
    ds = text_store(generator, tmp_path, text, KnnConfig(context_tokens=64, stride_tokens=32))
    assert ds.dim == 576 and len(ds) == len(tokenize(generator, text)[0]) - 1
    result = evaluate_perplexity(generator, ds, text, [0.25], k=64, temperature=1.0,
                                 config=KnnConfig(context_tokens=64, stride_tokens=32))
    assert dict(result.knn)[0.25] < result.base
    chunks = tinylm.make_chunks(["The Malvern brewery produced a dark ale called Midnight Anchor."])
    mode = KnnLmMode(generator, AnswerConfig(max_new_tokens=16), ds, KnnLmSettings(lambda_=0.65, neighbours=64))
    answer = mode.answer("What ale did the Malvern brewery produce?", (), chunks)
    assert answer.text and any(t.extra.neighbours for t in answer.tokens)


# -- the command line -------------------------------------------------------------------------------------
def test_cli_eval_perplexity_json(gen, tmp_path, capsys):
    from ui.cli import main

    model_dir = tmp_path / "tiny"
    gen.model.save_pretrained(model_dir)
    gen.tokenizer.save_pretrained(model_dir)
    config = tmp_path / "footnotes.toml"
    config.write_text(f'[generator]\nmodel = "{model_dir}"\nthreads = 1\n\n[knn]\ncontext_tokens = 16\nstride_tokens = 8\n')
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    argv = ["--config", str(config), "--data-dir", str(tmp_path / "data"), "eval", "perplexity", "--datastore",
            str(text), "--text", str(text), "--lambda", "0,1", "--k", "8", "--temperature", "0.01", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"tokens", "base", "knn"} and out["tokens"] == len(tokenize(gen, TEXT)[0]) - 1
    assert out["knn"]["0"] == pytest.approx(out["base"]) and out["knn"]["1"] < 1.01
    built = next((tmp_path / "data" / "eval").glob("knn-text-*"))
    assert main(argv[:7] + [str(built)] + argv[8:]) == 0  # the built datastore folder itself
    assert json.loads(capsys.readouterr().out) == out
    assert main(argv[:7] + [str(tmp_path)] + argv[8:]) == 2  # neither a text file nor a datastore
    assert "neither a text file nor a kNN-LM datastore" in capsys.readouterr().err


@pytest.mark.real_models
def test_cli_ask_knn_lm_builds_the_datastore_and_cites_neighbours(tmp_path):
    from tests.test_cli_knowledge import ROOT, footnotes

    data = str(tmp_path / "data")
    footnotes("--data-dir", data, "ingest", str(ROOT / "sample"))
    out = json.loads(footnotes("--data-dir", data, "ask", "Who was Ada Lovelace?", "--mode", "knn-lm", "--json").stdout)
    assert out["mode"] == "knn-lm" and out["answer"] and out["chunks"] == []
    assert "".join(t["text"] for t in out["tokens"]) == out["answer"]
    assert all(0 <= t["knn_share"] <= 1 for t in out["tokens"])
    cited = {n["source"] for t in out["tokens"] for n in t["neighbours"]}
    assert "ada-lovelace.md" in cited
    assert (tmp_path / "data" / "knn" / "meta.json").is_file()
