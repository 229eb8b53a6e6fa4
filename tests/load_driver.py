"""The load run shared by tests/test_load.py (fake embedder, tiny LM) and bench/load.py (the packaged
models): concurrent HTTP API chats and a continuous stream of searches while a large ingest runs.

The server is the real app on uvicorn (127.0.0.1, a free port) with the watcher running in-process,
as `footnotes serve` runs them. Every question has one document that answers it (an invented name
no other document holds), so a chat answer whose top chunk comes from another document is a mixed
answer. The process's resident memory is sampled throughout.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from tests.ui_fixtures import running, watching
from ui.server import create_app
from ui.service import Service

SYLLABLES = "ka lo mi ra ten vo shu pel dar quin zel bro fis gam hol".split()


def invented_name(i: int) -> str:
    """A distinct made-up word per i (no real text holds it): 'Zelkapel', ..."""
    rng = random.Random(i)
    return "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize() + str(i)


def fact_documents(n: int) -> dict[str, tuple[str, str]]:
    """``{file name: (question, text)}``: n one-fact documents, each the only one naming its subject."""
    out = {}
    for i in range(n):
        name, place = invented_name(i), invented_name(10_000 + i)
        text = (f"# The {name} festival\n\nThe {name} festival is held every spring in the village of {place}. "
                f"Visitors to the {name} festival race wooden boats on the river.\n")
        out[f"fact-{i:03d}.md"] = (f"Where is the {name} festival held?", text)
    return out


@dataclass
class Calls:
    """Latencies (s) and failures of one kind of request."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float, failure: str | None = None) -> None:
        with self.lock:
            self.latencies.append(seconds)
            if failure:
                self.failures.append(failure)

    def summary(self) -> str:
        return (f"{len(self.latencies)} requests, {len(self.failures)} failed, p50 {percentile(self.latencies, 50):.2f} s, "
                f"p95 {percentile(self.latencies, 95):.2f} s")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@dataclass
class LoadResult:
    chats: Calls
    searches: Calls
    mixed: list[tuple[str, list[str], str]]  # (question, sources of the answer's chunks, expected) when the top one is not
    search_misses: list[tuple[str, list[str], str]]  # (question, sources of the hits, expected) likewise, for searches
    ingest_files: int
    ingest_chunks: int
    ingest_seconds: float  # from the first file written to the last one indexed
    chat_seconds: float  # wall time of the whole chat burst
    rss_start_mb: float
    rss_peak_mb: float


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


class RssSampler:
    def __init__(self, every: float = 0.1) -> None:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def run_load(service: Service, facts: dict[str, tuple[str, str]], ingest: dict[str, str], chats: int = 50,
             search_threads: int = 2, ingest_timeout: float = 600, chat_timeout: float = 600) -> LoadResult:
    """``facts`` are already indexed; ``ingest`` (name: text) is written into the watched folder while
    ``chats`` concurrent chats (cycling over the facts' questions) and ``search_threads`` loops of
    searches run. Returns once the chats are answered and every ingested file is indexed."""
    folder = service.folder()
    questions = [(q, name) for name, (q, _) in facts.items()]
    chat_calls, search_calls, mixed, misses = Calls(), Calls(), [], []
    done = threading.Event()
    start_rss = rss_mb()
    with RssSampler() as rss, watching(service), running(create_app(service, with_ui=False)) as url:
        def write_ingest() -> None:
            for name, text in ingest.items():
                target = folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.part")
                tmp.write_text(text)
                tmp.rename(target)  # as editors and downloads do: the watcher sees a complete file

        def search_loop(seed: int) -> None:
            rng = random.Random(seed)
            with httpx.Client(base_url=url, timeout=120) as client:
                while not done.is_set():
                    question, expected = rng.choice(questions)
                    t = time.perf_counter()
                    try:
                        r = client.post("/v1/search", json={"query": question, "k": 3})
                        failure = None if r.status_code == 200 else f"search {r.status_code}: {r.text[:200]}"
                        hits = r.json() if r.status_code == 200 else None
                        if hits is not None and (not hits or hits[0]["source"] != expected):
                            misses.append((question, [h["source"] for h in hits], expected))
                    except httpx.HTTPError as exc:
                        failure = f"search: {exc!r}"
                    search_calls.add(time.perf_counter() - t, failure)

        def chat(i: int) -> None:
            question, expected = questions[i % len(questions)]
            t = time.perf_counter()
            try:
                r = httpx.post(f"{url}/v1/chat/completions", timeout=chat_timeout,
                               json={"messages": [{"role": "user", "content": question}]})
            except httpx.HTTPError as exc:
                chat_calls.add(time.perf_counter() - t, f"chat {i}: {exc!r}")
                return
            chat_calls.add(time.perf_counter() - t, None if r.status_code == 200 else f"chat {i} {r.status_code}: "
                                                                                      f"{r.text[:200]}")
            if r.status_code == 200:
                chunks = r.json()["footnotes"]["chunks"]
                if not chunks or chunks[0]["source"] != expected:
                    mixed.append((question, [c["source"] for c in chunks], expected))

        ingest_started = time.monotonic()
        writer = threading.Thread(target=write_ingest)
        writer.start()
        searchers = [threading.Thread(target=search_loop, args=(s,)) for s in range(search_threads)]
        for s in searchers:
            s.start()
        chat_started = time.monotonic()
        with ThreadPoolExecutor(max_workers=chats) as pool:
            list(pool.map(chat, range(chats)))
        chat_seconds = time.monotonic() - chat_started
        writer.join()
        names = set(ingest)
        deadline = time.monotonic() + ingest_timeout
        while time.monotonic() < deadline:
            indexed = {d.doc_id for d in service.documents() if d.status == "indexed"}
            if names <= indexed:
                break
            time.sleep(0.2)
        ingest_seconds = time.monotonic() - ingest_started
        done.set()
        for s in searchers:
            s.join()
    chunks = sum(len(service.kb.store.manifest.document_chunks(n)) for n in ingest)
    return LoadResult(chat_calls, search_calls, mixed, misses, len(ingest), chunks, ingest_seconds, chat_seconds,
                      start_rss, rss.peak)
