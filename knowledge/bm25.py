"""An incremental BM25 index over chunks: add, replace and remove chunks without rebuilding.

Scoring is BM25 as Lucene computes it (Kamphuis et al. 2020, "Which BM25 do you mean?",
https://cs.uwaterloo.ca/~jimmylin/publications/Kamphuis_etal_ECIR2020_preprint.pdf), the same as
``bm25s.BM25(method="lucene")``:

    score(q, d) = Σ_{t ∈ q} idf(t) · tf(t,d) / (tf(t,d) + k1 · (1 − b + b · |d| / avgdl))
    idf(t)      = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5))

(Lucene drops the constant factor (k1 + 1) of the classic formula: same ranking.) A query term
repeated in the query counts once per occurrence, as in bm25s and rank-bm25. N, df and avgdl are
those of the documents in the index *now*: they are kept exact on every add and remove, and the
formula is evaluated at query time from raw term frequencies, so no statistic is ever stale.

Layout: an inverted index term -> postings (document slot, tf) in growable numpy arrays. A new
chunk takes a new slot at the end; a removed one is only marked dead (its df contributions are
subtracted at once through a forward index slot -> term ids) and its postings are dropped by a
compaction once more than a quarter of the slots are dead. A query gathers the postings of its
terms, scores them with numpy and selects the top k with ``np.partition``.
"""

from __future__ import annotations

import math
import os
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_writer
from .errors import IndexUnusableError
from .text_tokens import TOKENIZER_VERSION, tokenize

FORMAT_VERSION = 1
_DEAD_FRACTION = 0.25  # compact once more than this share of the slots is dead


class _Postings:
    """The documents one term occurs in: slots (int32) and term frequencies (float32), growable."""

    __slots__ = ("slots", "tfs", "n")

    def __init__(self, slots: np.ndarray, tfs: np.ndarray) -> None:
        self.slots, self.tfs, self.n = slots, tfs, len(slots)

    def append(self, slots: np.ndarray, tfs: np.ndarray) -> None:
        end = self.n + len(slots)
        if end > len(self.slots):  # grow by doubling (a loaded term starts as a view at full capacity)
            cap = max(8, 2 * end)
            self.slots = np.concatenate([self.slots[: self.n], np.empty(cap - self.n, np.int32)])
            self.tfs = np.concatenate([self.tfs[: self.n], np.empty(cap - self.n, np.float32)])
        self.slots[self.n : end], self.tfs[self.n : end] = slots, tfs
        self.n = end


def _grown(arr: np.ndarray, size: int) -> np.ndarray:
    """``arr`` if it holds ``size`` items, else a copy with room for at least twice that."""
    if size <= len(arr):
        return arr
    out = np.zeros(max(1024, 2 * size), arr.dtype)
    out[: len(arr)] = arr
    return out


class BM25Index:
    """A BM25 (Lucene variant) index of texts keyed by chunk id; follows adds and removes exactly.

    Every public method holds one lock, so a watcher thread may change the index while another
    thread searches it.
    """

    def __init__(self, k1: float = 1.5, b: float = 0.75) -> None:
        if not k1 >= 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1, self.b = float(k1), float(b)
        self._lock = threading.RLock()
        self._term_id: dict[str, int] = {}
        self._terms: list[str] = []
        self._postings: list[_Postings] = []
        self._df = np.zeros(0, np.int64)  # (V,) live documents containing each term
        self._slot_of: dict[str, int] = {}
        self._ids: list[str | None] = []  # (S,) chunk id of each slot, None when dead
        self._doc_terms: list[np.ndarray | None] = []  # (S,) each live slot's distinct term ids
        self._dl = np.zeros(0, np.float64)  # (S,) document length in tokens
        self._alive = np.zeros(0, bool)  # (S,)
        self._total_len = 0

    # ---- size and membership ------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self._slot_of

    def ids(self) -> set[str]:
        with self._lock:
            return set(self._slot_of)

    # ---- changes ----------------------------------------------------------------------

    def add(self, chunk_id: str, text: str) -> None:
        """Index ``text`` under ``chunk_id``, replacing what was indexed under that id before."""
        self.add_many([(chunk_id, text)])

    def add_many(self, items: Iterable[tuple[str, str]]) -> None:
        """Index many (chunk id, text) pairs at once; a repeated or existing id is replaced."""
        batch = dict(items)  # a repeated id: the last text wins
        with self._lock:
            self._remove_slots([self._slot_of[cid] for cid in batch if cid in self._slot_of])
            self._append_docs([(cid, tokenize(text)) for cid, text in batch.items()])
            self._compact_if_needed()

    def remove(self, chunk_id: str) -> None:
        """Forget ``chunk_id``; KeyError if it is not indexed."""
        with self._lock:
            if chunk_id not in self._slot_of:
                raise KeyError(chunk_id)
            self.remove_many([chunk_id])

    def remove_many(self, chunk_ids: Iterable[str]) -> None:
        """Forget every listed chunk id that is indexed (ids that are not are ignored)."""
        with self._lock:
            self._remove_slots({self._slot_of[c] for c in chunk_ids if c in self._slot_of})
            self._compact_if_needed()

    def _append_docs(self, docs: list[tuple[str, list[str]]]) -> None:
        first = len(self._ids)
        end = first + len(docs)
        self._dl, self._alive = _grown(self._dl, end), _grown(self._alive, end)
        term_ids, tfs, lens = [], [], np.zeros(len(docs), np.int64)  # per doc; (B,)
        for i, (cid, tokens) in enumerate(docs):
            counts = Counter(tokens)
            tids = np.fromiter((self._intern(t) for t in counts), np.int32, len(counts))  # (u_i,)
            term_ids.append(tids)
            tfs.append(np.fromiter(counts.values(), np.float32, len(counts)))  # (u_i,)
            lens[i] = len(tokens)
            self._slot_of[cid] = first + i
            self._ids.append(cid)
            self._doc_terms.append(tids)
        self._dl[first:end], self._alive[first:end] = lens, True
        self._total_len += int(lens.sum())
        if not docs:
            return
        all_terms = np.concatenate(term_ids)  # (P,) one entry per (doc, distinct term)
        all_tfs = np.concatenate(tfs)  # (P,)
        all_slots = np.repeat(np.arange(first, end, dtype=np.int32), [len(t) for t in term_ids])  # (P,)
        self._df = _grown(self._df, len(self._terms))
        self._df[: len(self._terms)] += np.bincount(all_terms, minlength=len(self._terms))
        order = np.argsort(all_terms, kind="stable")  # (P,) group by term, slots stay ascending
        all_terms, all_tfs, all_slots = all_terms[order], all_tfs[order], all_slots[order]
        cuts = np.flatnonzero(np.diff(all_terms)) + 1  # starts of each term's run but the first
        for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(all_terms)]):
            self._postings[all_terms[lo]].append(all_slots[lo:hi], all_tfs[lo:hi])

    def _intern(self, term: str) -> int:
        tid = self._term_id.get(term)
        if tid is None:
            tid = self._term_id[term] = len(self._terms)
            self._terms.append(term)
            self._postings.append(_Postings(np.empty(0, np.int32), np.empty(0, np.float32)))
        return tid

    def _remove_slots(self, slots: Iterable[int]) -> None:
        for slot in slots:
            del self._slot_of[self._ids[slot]]
            self._df[self._doc_terms[slot]] -= 1  # distinct term ids: no repeated index
            self._total_len -= int(self._dl[slot])
            self._alive[slot] = False
            self._ids[slot] = self._doc_terms[slot] = None

    def _compact_if_needed(self) -> None:
        dead = len(self._ids) - len(self._slot_of)
        if dead > _DEAD_FRACTION * len(self._ids):
            self._restore(self._compact())

    # ---- search -------------------------------------------------------------------------

    def search(
        self, query: str, k: int, allowed: Callable[[str], bool] | None = None
    ) -> list[tuple[str, float]]:
        """The ``k`` best (chunk id, score) for ``query``, best first, scores > 0 only.

        ``allowed`` (e.g. a path-prefix or file-type test) keeps only the chunk ids it accepts; it
        is called on the best-scoring candidates first, not on every document. Ties are broken by
        chunk id, so the result does not depend on the order chunks were added in.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        with self._lock:
            scores = self._scores(tokenize(query))  # (S,)
            if scores is None or k == 0:
                return []
            cand = np.flatnonzero(scores)  # (C,) slots matching at least one query term
            return self._select(cand, scores[cand], k, allowed)

    def scores(self, query: str) -> dict[str, float]:
        """Every matching chunk id with its score (for tests and diagnostics)."""
        with self._lock:
            scores = self._scores(tokenize(query))
            if scores is None:
                return {}
            cand = np.flatnonzero(scores)
            return {self._ids[s]: float(scores[s]) for s in cand.tolist()}

    def scores_of(self, query: str, chunk_ids: Iterable[str]) -> dict[str, float]:
        """The score of each of ``chunk_ids`` that is indexed (0 when it matches no query term)."""
        with self._lock:
            scores = self._scores(tokenize(query))
            return {c: float(scores[self._slot_of[c]]) if scores is not None else 0.0
                    for c in chunk_ids if c in self._slot_of}

    def _scores(self, query_tokens: list[str]) -> np.ndarray | None:
        """(S,) BM25 scores of every slot, dead slots 0; None when no query term is indexed."""
        n_docs = len(self._slot_of)
        terms = Counter(t for t in query_tokens if t in self._term_id)
        terms = {t: q for t, q in terms.items() if self._df[self._term_id[t]] > 0}
        if not terms or self._total_len == 0:
            return None
        avgdl = self._total_len / n_docs
        k1, b = self.k1, self.b
        dl = self._dl
        scores = np.zeros(len(self._ids), np.float64)  # (S,)
        for term in sorted(terms):  # a fixed order: scores do not depend on term ids
            tid = self._term_id[term]
            df = int(self._df[tid])
            idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
            p = self._postings[tid]
            slots, tf = p.slots[: p.n], p.tfs[: p.n]  # (n_t,)
            norm = k1 * (1 - b) + (k1 * b / avgdl) * dl[slots]  # (n_t,)
            scores[slots] += (terms[term] * idf) * tf / (tf + norm)  # one posting per slot per term
        if len(self._slot_of) < len(self._ids):
            scores[~self._alive[: len(self._ids)]] = 0.0
        return scores

    def _select(
        self, cand: np.ndarray, cand_scores: np.ndarray, k: int, allowed: Callable[[str], bool] | None
    ) -> list[tuple[str, float]]:
        if allowed is None:
            return self._top(cand, cand_scores, k)
        verdicts: dict[str, bool] = {}  # each id is asked once

        def accepted(cid: str) -> bool:
            if cid not in verdicts:
                verdicts[cid] = bool(allowed(cid))
            return verdicts[cid]

        m = k
        while 4 * m < len(cand):  # look at the best m first; most filters keep enough of them
            hits = [h for h in self._top(cand, cand_scores, m) if accepted(h[0])]
            if len(hits) >= k:
                return hits[:k]
            m *= 4
        ids = self._ids
        keep = np.fromiter((accepted(ids[s]) for s in cand.tolist()), bool, len(cand))  # (C,)
        return self._top(cand[keep], cand_scores[keep], k)

    def _top(self, slots: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k best of (slots, scores), ties at the k-th score broken by chunk id."""
        if len(slots) > k:
            kth = np.partition(scores, len(scores) - k)[len(scores) - k]  # k-th largest score
            keep = scores >= kth
            slots, scores = slots[keep], scores[keep]
        ids = self._ids
        hits = zip([ids[s] for s in slots.tolist()], scores.tolist())
        return sorted(hits, key=lambda h: (-h[1], h[0]))[:k]

    # ---- compact form: compaction, save and load ----------------------------------------

    def _compact(self) -> _Compact:
        """The live documents in CSR form: dead slots dropped, the others renumbered in order,
        terms that no live document has dropped."""
        n_slots = len(self._ids)
        live_terms = np.flatnonzero(self._df[: len(self._terms)] > 0)  # (V,)
        posts = [self._postings[t] for t in live_terms.tolist()]
        slots = np.concatenate([np.empty(0, np.int32)] + [p.slots[: p.n] for p in posts])  # (P_all,)
        tfs = np.concatenate([np.empty(0, np.float32)] + [p.tfs[: p.n] for p in posts])  # (P_all,)
        owner = np.repeat(np.arange(len(posts)), [p.n for p in posts])  # (P_all,) term of each posting
        alive = self._alive[:n_slots]  # (S_all,)
        keep = alive[slots]  # (P_all,)
        new_slot = (np.cumsum(alive) - 1).astype(np.int32)  # (S_all,) old slot -> new slot
        per_term = np.bincount(owner[keep], minlength=len(posts))  # (V,)
        return _Compact(
            terms=[self._terms[t] for t in live_terms.tolist()],
            indptr=np.concatenate([[0], np.cumsum(per_term)]).astype(np.int64),  # (V+1,)
            slots=new_slot[slots[keep]],  # (P,)
            tfs=tfs[keep],  # (P,)
            chunk_ids=[c for c in self._ids if c is not None],
            doc_len=self._dl[:n_slots][alive].astype(np.int64),  # (S,)
        )

    def _restore(self, c: _Compact) -> None:
        """Replace the whole state by ``c`` (which has no dead slots)."""
        n_docs = len(c.chunk_ids)
        self._terms = list(c.terms)
        self._term_id = {t: i for i, t in enumerate(c.terms)}
        bounds = c.indptr.tolist()
        self._postings = [_Postings(c.slots[lo:hi], c.tfs[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
        self._df = np.diff(c.indptr).astype(np.int64)  # (V,) one posting per (term, document)
        self._ids = list(c.chunk_ids)
        self._slot_of = {cid: i for i, cid in enumerate(c.chunk_ids)}
        self._dl = c.doc_len.astype(np.float64)  # (S,)
        self._alive = np.ones(n_docs, bool)  # (S,)
        self._total_len = int(c.doc_len.sum())
        owner = np.repeat(np.arange(len(c.terms), dtype=np.int32), np.diff(c.indptr))  # (P,) posting -> term
        terms_by_doc = owner[np.argsort(c.slots, kind="stable")]  # (P,) postings grouped by document
        doc_ptr = np.concatenate([[0], np.cumsum(np.bincount(c.slots, minlength=n_docs))]).tolist()  # (S+1,)
        self._doc_terms = [terms_by_doc[lo:hi] for lo, hi in zip(doc_ptr[:-1], doc_ptr[1:])]  # S arrays

    def save(self, path: str | os.PathLike) -> None:
        """Write the index to ``path`` (a .npz, no pickle) atomically: a crash leaves the old file."""
        path = Path(path)
        with self._lock:
            c = self._compact()
        term_bytes, term_ptr = _pack_strings(c.terms)
        id_bytes, id_ptr = _pack_strings(c.chunk_ids)
        arrays = dict(
            format_version=np.array(FORMAT_VERSION), tokenizer=np.array(TOKENIZER_VERSION),
            params=np.array([self.k1, self.b]), term_bytes=term_bytes, term_ptr=term_ptr,
            indptr=c.indptr, slots=c.slots, tfs=c.tfs, id_bytes=id_bytes, id_ptr=id_ptr, doc_len=c.doc_len,
        )
        with atomic_writer(path) as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> BM25Index:
        """Read an index written by ``save``; IndexUnusableError if it is missing, corrupt or outdated."""

        def fail(why: str) -> IndexUnusableError:
            return IndexUnusableError(f"BM25 index {path} {why}: run `footnotes reindex` to rebuild it")

        try:
            with np.load(path, allow_pickle=False) as z:
                a = {name: z[name] for name in z.files}
        except FileNotFoundError:
            raise fail("is missing") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise fail(f"is unreadable ({type(e).__name__}: {e})") from e
        version, tokenizer = a.get("format_version"), a.get("tokenizer")
        if version is None or version.dtype.kind not in "iu" or version.tolist() != FORMAT_VERSION:
            raise fail(f"has format version {version}, this Footnotes reads version {FORMAT_VERSION}")
        if str(tokenizer) != TOKENIZER_VERSION:
            raise fail(f"was tokenized by {tokenizer}, this Footnotes tokenizes by {TOKENIZER_VERSION}")
        try:
            index = cls(*a["params"].tolist())
            c = _Compact(
                terms=_unpack_strings(a["term_bytes"], a["term_ptr"]),
                indptr=a["indptr"].astype(np.int64),
                slots=a["slots"].astype(np.int32),
                tfs=a["tfs"].astype(np.float32),
                chunk_ids=_unpack_strings(a["id_bytes"], a["id_ptr"]),
                doc_len=a["doc_len"].astype(np.int64),
            )
            c.check()
            index._restore(c)
        except (KeyError, ValueError, TypeError, UnicodeDecodeError) as e:
            raise fail(f"is inconsistent ({type(e).__name__}: {e})") from e
        return index


@dataclass(frozen=True, eq=False)
class _Compact:
    """An index in CSR form: term ``terms[t]`` occurs in documents ``slots[indptr[t]:indptr[t+1]]``
    with frequencies ``tfs[indptr[t]:indptr[t+1]]``; document s is ``chunk_ids[s]``, ``doc_len[s]`` tokens."""

    terms: list[str]  # (V,)
    indptr: np.ndarray  # (V+1,) int64
    slots: np.ndarray  # (P,) int32
    tfs: np.ndarray  # (P,) float32
    chunk_ids: list[str]  # (S,)
    doc_len: np.ndarray  # (S,) int64

    def check(self) -> None:
        """ValueError unless the arrays fit together (a file can be damaged in many ways)."""
        n_terms, n_docs = len(self.terms), len(self.chunk_ids)
        ptr = self.indptr
        if ptr.shape != (n_terms + 1,) or ptr[0] != 0 or np.any(np.diff(ptr) < 0):
            raise ValueError("term offsets do not match the vocabulary")
        if self.slots.shape != self.tfs.shape or self.slots.ndim != 1 or ptr[-1] != len(self.slots):
            raise ValueError("postings do not match the term offsets")
        if self.doc_len.shape != (n_docs,) or len(set(self.chunk_ids)) != n_docs:
            raise ValueError("document lengths or ids do not match the documents")
        if len(self.slots) and (self.slots.min() < 0 or self.slots.max() >= n_docs):
            raise ValueError("postings point outside the documents")


def _pack_strings(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strings -> (UTF-8 bytes as uint8 (B,), offsets (n+1,)): no pickle, no fixed-width padding."""
    encoded = [s.encode("utf-8") for s in strings]
    ptr = np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64)  # (n+1,)
    return np.frombuffer(b"".join(encoded), np.uint8), ptr


def _unpack_strings(data: np.ndarray, ptr: np.ndarray) -> list[str]:
    raw = data.astype(np.uint8, copy=False).tobytes()
    bounds = ptr.tolist()
    return [raw[lo:hi].decode("utf-8") for lo, hi in zip(bounds[:-1], bounds[1:])]
