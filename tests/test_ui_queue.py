"""The generation queue: one generation at a time (or ``parallel``, an exclusive one alone, first
come first served), errors reach the consumer, a consumer that goes away frees the queue after the
current item (or its place in line)."""

from __future__ import annotations

import gc
import threading
import time

import pytest

from ui.generation import GenerationQueue


def counting(active: list[int], peak: list[int], lock: threading.Lock, n: int = 5, delay: float = 0.01):
    def produce():
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            for i in range(n):
                time.sleep(delay)
                yield i
        finally:
            with lock:
                active[0] -= 1
    return produce


def test_generations_run_one_at_a_time_and_all_finish() -> None:
    queue = GenerationQueue()
    active, peak, lock = [0], [0], threading.Lock()
    results: list[list[int]] = []

    def consume() -> None:
        results.append(list(queue.stream(counting(active, peak, lock))))

    threads = [threading.Thread(target=consume) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert peak[0] == 1
    assert results == [[0, 1, 2, 3, 4]] * 6
    assert queue.waiting == 0


def test_an_error_reaches_the_consumer_and_the_queue_goes_on() -> None:
    queue = GenerationQueue()

    def broken():
        yield 1
        raise ValueError("model exploded")

    stream = queue.stream(broken)
    assert next(stream) == 1
    with pytest.raises(ValueError, match="model exploded"):
        next(stream)
    assert queue.run(lambda: iter([7, 8])) == 8


def test_a_consumer_that_leaves_frees_the_queue_after_the_current_item() -> None:
    queue = GenerationQueue()
    produced: list[int] = []
    closed = threading.Event()

    def slow():
        try:
            for i in range(1000):
                produced.append(i)
                time.sleep(0.01)
                yield i
        finally:
            closed.set()

    stream = queue.stream(slow)
    assert next(stream) == 0
    stream.cancel()
    assert closed.wait(5)
    assert len(produced) < 20
    assert queue.run(lambda: iter(["next"])) == "next"


def test_a_dropped_stream_is_cancelled_too() -> None:
    queue = GenerationQueue()
    closed = threading.Event()

    def endless():
        try:
            while True:
                time.sleep(0.01)
                yield 0
        finally:
            closed.set()

    stream = queue.stream(endless)
    next(stream)
    del stream
    gc.collect()
    assert closed.wait(5)


def test_parallel_generations_run_together_up_to_the_limit() -> None:
    queue = GenerationQueue(parallel=3)
    active, peak, lock = [0], [0], threading.Lock()
    results: list[list[int]] = []

    def consume() -> None:
        results.append(list(queue.stream(counting(active, peak, lock, n=10, delay=0.02))))

    threads = [threading.Thread(target=consume) for _ in range(7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert peak[0] == 3 and queue.peak_running == 3
    assert results == [list(range(10))] * 7
    assert queue.waiting == 0


def test_an_exclusive_generation_runs_alone_and_nobody_overtakes_it() -> None:
    queue = GenerationQueue(parallel=4)
    log: list[str] = []
    lock = threading.Lock()
    active = [0]
    alone: list[bool] = []

    def job(name: str, exclusive: bool):
        def produce():
            with lock:
                active[0] += 1
                log.append(f"start {name}")
            try:
                time.sleep(0.1)
                with lock:
                    if exclusive:
                        alone.append(active[0] == 1)
                yield name
            finally:
                with lock:
                    active[0] -= 1
                    log.append(f"end {name}")
        return produce

    streams = []
    for name, exclusive in [("a", False), ("b", False), ("knn", True), ("c", False)]:
        streams.append(queue.stream(job(name, exclusive), exclusive))
        time.sleep(0.02)  # arrival order
    assert [list(s) for s in streams] == [["a"], ["b"], ["knn"], ["c"]]
    assert alone == [True]
    assert log.index("start knn") > max(log.index("end a"), log.index("end b"))
    assert log.index("start c") > log.index("end knn")  # c arrived after knn: it waited its turn


def test_a_consumer_that_leaves_while_waiting_frees_its_place_in_line() -> None:
    queue = GenerationQueue()
    gate = threading.Event()
    started: list[str] = []

    def job(name: str):
        def produce():
            started.append(name)
            if name == "first":
                gate.wait(10)
            yield name
        return produce

    first = queue.stream(job("first"))
    waiting = queue.stream(job("gone"))
    third = queue.stream(job("third"))
    waiting.cancel()
    time.sleep(0.3)
    gate.set()
    assert list(first) == ["first"] and list(third) == ["third"]
    assert started == ["first", "third"]
    assert queue.waiting == 0


def test_parallel_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        GenerationQueue(parallel=0)
