"""Several answers decoded in the same forward passes: continuous batching of lockstep batches.

When several users ask at once, each answer's rows (RAG-Token's k chunk prompts and the null
prompt, RAG-Sequence's beams, ...) would each run their own forward pass per token. A
:class:`BatchScheduler` owns one :class:`~assistant.lockstep.LockstepBatch` holding the rows of
every answer in progress; a mode gets a :class:`SharedBatch` (the same interface as a
LockstepBatch, from :meth:`Generator.lockstep`) whose calls are carried out by the scheduler's
thread:

- ``prefill``: the new rows join. Prompts that arrive together are prefilled in one pass, then
  appended to the shared batch (left padding keeps every row exact, see lockstep.py). Each member
  gets its own rows' results back (``prefill_scored``: with its own rows' last prompt tokens scored).
- ``step``: the scheduler waits (up to ``gather_seconds``) until every member has asked for its
  next token, then advances all of them in one pass. A member that is busy elsewhere gets a masked
  hole instead of a token, so nobody waits for a slow member for long.
- ``close`` (the end of the ``with`` block): the member's rows leave the batch.

Each row computes what it would alone (up to float rounding: tests compare against unshared runs),
so answers do not depend on who else is asking.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .lockstep import LockstepBatch, Prefill, PromptState


@dataclass
class _Call:
    """One member's request to the scheduler thread, and its result."""

    kind: str  # "join", "step", "select", "snapshot", "leave"
    member: "SharedBatch"
    payload: Any = None
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


class BatchScheduler:
    """Runs the forward passes of every :class:`SharedBatch` of one model, in one thread."""

    def __init__(self, model: Any, pad_id: int, max_rows: int = 96, gather_seconds: float = 0.02,
                 prefix_cache: Any = None) -> None:
        self.model = model
        self.pad_id = pad_id
        self.prefix_cache = prefix_cache  # an assistant.prefix_cache.PrefixCache for the joins' prefills
        self.max_rows = max_rows
        self.gather_seconds = gather_seconds
        self._cond = threading.Condition()
        self._calls: list[_Call] = []
        self._members: list[SharedBatch] = []  # in row order of self._batch
        self._batch: LockstepBatch | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.passes = 0  # forward passes run (prefills and steps), for tests and benchmarks
        self.step_passes = 0  # of which decoding steps
        self.rows_stepped = 0  # rows in those steps (their mean is the batch the sharing achieved)

    # -- members ---------------------------------------------------------------------------------
    def batch(self, prompts: Sequence[Sequence[int]]) -> "SharedBatch":
        """A new member with these prompts (nothing runs until its ``prefill``)."""
        return SharedBatch(self, [list(p) for p in prompts])

    def call(self, kind: str, member: "SharedBatch", payload: Any = None) -> Any:
        call = _Call(kind, member, payload)
        with self._cond:
            if self._closed:
                raise RuntimeError("the batch scheduler is closed")
            self._calls.append(call)
            self._start()
            self._cond.notify_all()
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def live_rows(self) -> int:
        return self._batch.rows if self._batch is not None else 0

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="batch-scheduler", daemon=True)
            self._thread.start()

    # -- the scheduler thread --------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                work = self._next_work()
                if work is None:
                    return
            kind, calls = work
            try:
                if kind == "quick":
                    for call in calls:
                        self._quick(call)
                elif kind == "join":
                    self._join(calls)
                else:
                    self._step(calls)
            except BaseException as exc:  # a failed pass: its members get the error, the rest go on
                self._fail(calls, exc)

    def _next_work(self) -> tuple[str, list[_Call]] | None:
        """Under the lock: wait for something to do and take it. Leaves, selections and snapshots
        first (cheap); then joins (their prompts are prefilled together, so they wait a moment for
        company); then a step of every member that asked, once all have or the gather time is up."""
        while True:
            if self._closed:
                for call in self._calls:
                    call.finish(error=RuntimeError("the batch scheduler is closed"))
                self._calls.clear()
                return None
            quick = [c for c in self._calls if c.kind in ("leave", "select", "snapshot")]
            if quick:
                return "quick", self._take(quick)
            joins = [c for c in self._calls if c.kind == "join"]
            steps = [c for c in self._calls if c.kind == "step"]
            admitted = self._admissible(joins)
            if admitted and self._waited(admitted):
                return "join", self._take(admitted)
            if steps and (len(steps) == len(self._members) or self._waited(steps)):
                return "step", self._take(steps)
            deadlines = [c.payload["since"] + self.gather_seconds for c in admitted + steps]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            self._cond.wait(timeout)

    def _waited(self, calls: list[_Call]) -> bool:
        return time.monotonic() - min(c.payload["since"] for c in calls) >= self.gather_seconds

    def _admissible(self, joins: list[_Call]) -> list[_Call]:
        """The joins (oldest first) whose rows fit in ``max_rows``; one always fits an empty batch."""
        out, rows = [], self.live_rows
        for call in joins:
            n = len(call.member.prompts)
            if rows + n > self.max_rows and (rows or out):
                break
            out.append(call)
            rows += n
        return out

    def _take(self, calls: list[_Call]) -> list[_Call]:
        taken = set(map(id, calls))
        self._calls = [c for c in self._calls if id(c) not in taken]
        return calls

    def _offset(self, member: "SharedBatch") -> int:
        start = 0
        for m in self._members:
            if m is member:
                return start
            start += m.rows
        raise RuntimeError("this batch is not part of the scheduler (it left, or a pass failed)")

    def _quick(self, call: _Call) -> None:
        member = call.member
        try:
            if call.kind == "leave":
                if member in self._members:
                    self._remove(member)
                call.finish()
            elif call.kind == "select":
                call.finish(self._select(member, call.payload))
            else:
                start = self._offset(member)
                rows = slice(start, start + member.rows)
                call.finish(self._batch.snapshot(call.payload, rows))
        except BaseException as exc:
            call.finish(error=exc)

    def _join(self, calls: list[_Call]) -> None:
        prompts = [p for call in calls for p in call.member.prompts]
        new = LockstepBatch(self.model, prompts, self.pad_id, self.prefix_cache)
        out = new.prefill_scored([call.payload["score_last"] for call in calls for _ in call.member.prompts])
        self.passes += 1
        if self._batch is None:
            self._batch = new
        else:
            self._batch.extend(new)
        start, width = 0, out.last_logprobs.shape[1]
        for call in calls:
            rows = slice(start, start + len(call.member.prompts))
            self._members.append(call.member)
            call.finish(Prefill(out.next_logprobs[rows], out.last_logprobs[rows, width - call.payload["score_last"] :]))
            start = rows.stop

    def _step(self, calls: list[_Call]) -> None:
        stale = [c for c in calls if c.member not in self._members]
        for call in stale:  # its rows were dropped by a failed pass: only this member fails
            call.finish(error=RuntimeError("this answer's rows were dropped after a failed forward pass"))
        calls = [c for c in calls if c.member in self._members]
        if not calls:
            return
        batch = self._batch
        tokens = torch.full((batch.rows,), self.pad_id, dtype=torch.long)  # (B,)
        live = torch.zeros(batch.rows, dtype=torch.bool)  # (B,)
        spans = []
        for call in calls:
            start = self._offset(call.member)
            stop = start + call.member.rows
            tokens[start:stop] = call.payload["tokens"]
            live[start:stop] = True
            spans.append((call, start, stop))
        logprobs = batch.step(tokens, None if bool(live.all()) else live)  # (B, V)
        self.passes += 1
        self.step_passes += 1
        self.rows_stepped += batch.rows
        for call, start, stop in spans:
            call.finish(logprobs[start:stop])

    def _select(self, member: "SharedBatch", rows: Sequence[int]) -> int:
        """Reorder (or repeat, or drop) one member's rows; the others keep theirs."""
        index: list[int] = []
        start = 0
        for m in self._members:
            index += [start + r for r in rows] if m is member else list(range(start, start + m.rows))
            start += m.rows
        if member not in self._members:
            raise RuntimeError("this batch is not part of the scheduler (it left, or a pass failed)")
        self._resize(index)
        return len(rows)

    def _remove(self, member: "SharedBatch") -> None:
        start = self._offset(member)
        keep = [r for r in range(self._batch.rows) if not start <= r < start + member.rows]
        self._members.remove(member)
        self._resize(keep)

    def _resize(self, index: list[int]) -> None:
        if not index:
            self._batch = None
        else:
            self._batch.select(index)

    def _fail(self, calls: list[_Call], exc: BaseException) -> None:
        """A pass failed: its callers get the error; every member's rows are dropped (the shared
        state may be half updated), so the others' next call fails too and their answers end with it."""
        for call in calls:
            if not call.done.is_set():
                call.finish(error=exc)
        self._members.clear()
        self._batch = None


class SharedBatch:
    """One answer's rows in a :class:`BatchScheduler`: the interface of a LockstepBatch."""

    def __init__(self, scheduler: BatchScheduler, prompts: list[list[int]]) -> None:
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        self.scheduler = scheduler
        self.prompts = prompts
        self.rows = len(prompts)
        self._joined = False

    def prefill(self) -> torch.Tensor:
        """Join the shared batch; returns the next-token log-probs (rows, V)."""
        return self.prefill_scored().next_logprobs

    def prefill_scored(self, score_last: int = 0) -> Prefill:
        """Join the shared batch, scoring each row's last ``score_last`` prompt tokens
        (:meth:`LockstepBatch.prefill_scored`); returns this answer's rows' results."""
        if self._joined:
            raise RuntimeError("prefill runs once per batch")
        if score_last < 0 or score_last >= min(map(len, self.prompts)):
            raise ValueError(f"score_last must be from 0 to the shortest prompt's length - 1, got {score_last}")
        self._joined = True
        return self.scheduler.call("join", self, {"since": time.monotonic(), "score_last": score_last})

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token to each of this answer's rows.  tokens: (rows,) -> (rows, V)"""
        if tokens.shape != (self.rows,):
            raise ValueError(f"step needs one token per row: shape ({self.rows},), got {tuple(tokens.shape)}")
        return self.scheduler.call("step", self, {"since": time.monotonic(), "tokens": tokens.long()})

    def select(self, rows: Sequence[int]) -> None:
        self.rows = self.scheduler.call("select", self, list(rows))

    def snapshot(self, next_logprobs: torch.Tensor) -> PromptState:
        return self.scheduler.call("snapshot", self, next_logprobs)

    def close(self) -> None:
        """Leave the shared batch (idempotent)."""
        if self._joined:
            self._joined = False
            self.scheduler.call("leave", self)

    def __enter__(self) -> "SharedBatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

