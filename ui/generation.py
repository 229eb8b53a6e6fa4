"""One answer is generated at a time, first come first served, so memory stays bounded by one answer.

The chat page and the HTTP API share one :class:`GenerationQueue`. A stream is produced in a
worker thread that holds the queue's lock; its consumer reads the items as they come. When the
consumer goes away (a closed browser tab, a dropped HTTP connection) the worker stops after the
current token and the next request in line starts.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
_END = object()


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class Stream(Generic[T]):
    """The items of one queued generation, as an iterator; ``cancel()`` (or ``close()``) stops it."""

    def __init__(self, items: queue.Queue, cancelled: threading.Event) -> None:
        self._items = items
        self._cancelled = cancelled
        self._done = False

    def __iter__(self) -> Stream[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item = self._items.get()
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, _Failed):
            self._done = True
            raise item.error
        return item

    def cancel(self) -> None:
        self._cancelled.set()

    close = cancel

    def __del__(self) -> None:  # a consumer that was dropped without close() still frees the worker
        self._cancelled.set()


class GenerationQueue:
    """Runs generations one at a time in arrival order (``threading.Lock`` is FIFO enough here:
    waiters are few and each holds it for one answer)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Generations queued or running now."""
        with self._count_lock:
            return self._waiting

    def stream(self, produce: Callable[[], Iterator[T]]) -> Stream[T]:
        """Start ``produce()`` when the queue reaches it; its items arrive through the returned Stream."""
        items: queue.Queue = queue.Queue()
        cancelled = threading.Event()
        with self._count_lock:
            self._waiting += 1
        worker = threading.Thread(target=self._work, args=(produce, items, cancelled), name="generation", daemon=True)
        worker.start()
        return Stream(items, cancelled)

    def run(self, produce: Callable[[], Iterator[T]]) -> T:
        """The last item of a queued generation (for callers that do not stream)."""
        last = _END
        for last in self.stream(produce):
            pass
        if last is _END:
            raise RuntimeError("the generation produced nothing")
        return last  # type: ignore[return-value]

    def _work(self, produce: Callable[[], Iterator[T]], items: queue.Queue, cancelled: threading.Event) -> None:
        try:
            with self._lock:
                if cancelled.is_set():
                    return
                iterator = produce()
                try:
                    for item in iterator:
                        items.put(item)
                        if cancelled.is_set():
                            break
                finally:
                    close = getattr(iterator, "close", None)
                    if close is not None:
                        close()
        except BaseException as exc:  # handed to the consumer, which reports it
            items.put(_Failed(exc))
        finally:
            with self._count_lock:
                self._waiting -= 1
            items.put(_END)
