"""Progress reporting for long work, independent of how it is shown (tqdm in the CLI, the UI's bar)."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, total: int, what: str) -> None:
        """A phase of ``total`` steps begins."""

    def advance(self, n: int = 1) -> None:
        """``n`` more steps are done."""


class NoProgress:
    def start(self, total: int, what: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


class TqdmProgress:
    """Progress on the terminal (stderr) with tqdm; silent when the total is small."""

    def __init__(self, min_total: int = 50) -> None:
        self._bar = None
        self.min_total = min_total

    def start(self, total: int, what: str) -> None:
        from tqdm import tqdm

        self.close()
        if total >= self.min_total:
            self._bar = tqdm(total=total, desc=what, unit="chunk", leave=False)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
