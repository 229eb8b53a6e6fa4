"""Answers are generated in arrival order, up to ``parallel`` at once, so memory stays bounded.

The chat page and the HTTP API share one :class:`GenerationQueue`. A stream is produced in a
worker thread once the queue admits it; its consumer reads the items as they come, either as a
plain iterator (the page) or with ``async for`` (the API: a request waiting in line holds no thread
of the web server's pool, so searches and document listings go on while many chats wait). When the
consumer goes away (a closed browser tab, a dropped HTTP connection) the worker stops after the
current token and the next request in line starts.

Answers running together share forward passes where their mode allows it (assistant/batching.py);
a generation marked ``exclusive`` (a mode that hooks the model, such as kNN-LM) runs alone. The
line is strictly first come first served: nobody overtakes an exclusive request waiting its turn.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
_END = object()


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class _Channel:
    """Items from the worker to one consumer; wakes an asyncio consumer from the worker thread."""

    def __init__(self) -> None:
        self.items: queue.Queue = queue.Queue()
        self.cancelled = threading.Event()
        self._lock = threading.Lock()
        self._wakeup: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def put(self, item: object) -> None:
        self.items.put(item)
        with self._lock:
            wakeup = self._wakeup
        if wakeup is not None:
            loop, event = wakeup
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the consumer's loop is closed: nobody is listening any more
                self.cancelled.set()

    async def get_async(self) -> object:
        with self._lock:
            if self._wakeup is None:
                self._wakeup = (asyncio.get_running_loop(), asyncio.Event())
            event = self._wakeup[1]
        while True:
            try:
                return self.items.get_nowait()
            except queue.Empty:
                event.clear()
                if not self.items.empty():
                    continue
                await event.wait()


class Stream(Generic[T]):
    """The items of one queued generation; iterate it (``for`` or ``async for``); ``cancel()``
    (or ``close()``) stops it."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel
        self._done = False

    def __iter__(self) -> Stream[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item = self._take(self._channel.items.get())
        if item is _END:
            raise StopIteration
        return item  # type: ignore[return-value]

    def __aiter__(self) -> Stream[T]:
        return self

    async def __anext__(self) -> T:
        if self._done:
            raise StopAsyncIteration
        item = self._take(await self._channel.get_async())
        if item is _END:
            raise StopAsyncIteration
        return item  # type: ignore[return-value]

    def _take(self, item: object) -> object:
        if item is _END:
            self._done = True
        elif isinstance(item, _Failed):
            self._done = True
            raise item.error
        return item

    def cancel(self) -> None:
        self._channel.cancelled.set()

    close = cancel

    def __del__(self) -> None:  # a consumer that was dropped without close() still frees the worker
        self._channel.cancelled.set()


class GenerationQueue:
    """Runs generations in arrival order, up to ``parallel`` at once; an ``exclusive`` one alone."""

    def __init__(self, parallel: int = 1) -> None:
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, got {parallel}")
        self.parallel = parallel
        self._cond = threading.Condition()
        self._line: deque[_Ticket] = deque()  # admitted from the left, in arrival order
        self._running = 0
        self._exclusive_running = False
        self._waiting = 0
        self.peak_running = 0  # the most generations that ran at once (benchmarks, tests)

    @property
    def waiting(self) -> int:
        """Generations queued or running now."""
        with self._cond:
            return self._waiting

    def stream(self, produce: Callable[[], Iterator[T]], exclusive: bool = False) -> Stream[T]:
        """Start ``produce()`` when the queue reaches it; its items arrive through the returned Stream."""
        channel = _Channel()
        ticket = _Ticket(exclusive, channel)
        with self._cond:
            self._waiting += 1
            self._line.append(ticket)
        threading.Thread(target=self._work, args=(produce, ticket), name="generation", daemon=True).start()
        return Stream(channel)

    def run(self, produce: Callable[[], Iterator[T]], exclusive: bool = False) -> T:
        """The last item of a queued generation (for callers that do not stream)."""
        last = _END
        for last in self.stream(produce, exclusive):
            pass
        if last is _END:
            raise RuntimeError("the generation produced nothing")
        return last  # type: ignore[return-value]

    def _admit(self, ticket: _Ticket) -> bool:
        """Wait for the ticket's turn; False if its consumer went away while it waited."""
        with self._cond:
            while True:
                if ticket.channel.cancelled.is_set():
                    self._line.remove(ticket)
                    self._cond.notify_all()
                    return False
                if self._line[0] is ticket and self._fits(ticket):
                    self._line.popleft()
                    self._running += 1
                    self._exclusive_running = ticket.exclusive
                    self.peak_running = max(self.peak_running, self._running)
                    self._cond.notify_all()  # the next in line may fit beside it
                    return True
                self._cond.wait(0.25)  # wake now and then to notice a cancelled consumer

    def _fits(self, ticket: _Ticket) -> bool:
        if ticket.exclusive:
            return self._running == 0
        return not self._exclusive_running and self._running < self.parallel

    def _release(self) -> None:
        with self._cond:
            self._running -= 1
            self._exclusive_running = False
            self._cond.notify_all()

    def _work(self, produce: Callable[[], Iterator[T]], ticket: _Ticket) -> None:
        channel = ticket.channel
        try:
            if not self._admit(ticket):
                return
            try:
                iterator = produce()
                try:
                    for item in iterator:
                        channel.put(item)
                        if channel.cancelled.is_set():
                            break
                finally:
                    close = getattr(iterator, "close", None)
                    if close is not None:
                        close()
            finally:
                self._release()
        except BaseException as exc:  # handed to the consumer, which reports it
            channel.put(_Failed(exc))
        finally:
            with self._cond:
                self._waiting -= 1
            channel.put(_END)


@dataclass(frozen=True, eq=False)
class _Ticket:
    exclusive: bool
    channel: _Channel
