"""kill -9 at any point of an ingest: after a restart the indexes converge, with nothing duplicated,
orphaned or missing."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import assert_consistent

ROOT = Path(__file__).resolve().parent.parent


def make_corpus(folder: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(400)]
    for i in range(n):
        paras = ["# Doc %d" % i] + [" ".join(rng.choices(words, k=rng.randint(10, 60))) for _ in range(rng.randint(1, 6))]
        (folder / f"d{i:03d}.md").write_text("\n\n".join(paras) + "\n")


def run_worker(folder: Path, data_dir: Path, kill_after: float | None) -> bool:
    """Run a sync in a subprocess; kill -9 it ``kill_after`` seconds after it opened. True if it finished."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.crash_worker", str(folder), str(data_dir)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "opened", proc.stderr.read()
    if kill_after is not None:
        time.sleep(kill_after)
        proc.kill()
    out, err = proc.communicate(timeout=300)
    if kill_after is None:
        assert proc.returncode == 0, err
    return "done" in out


def test_kill_minus_9_during_ingest_converges(folder, open_kb, tmp_path):
    make_corpus(folder, 120, seed=1)
    data_dir = tmp_path / "data"
    rng = random.Random(7)
    for round_ in range(8):
        if round_ == 3:  # the folder changes between crashes too
            for p in sorted(folder.glob("*.md"))[:20]:
                p.unlink()
            make_corpus(folder, 10, seed=99)
        run_worker(folder, data_dir, kill_after=rng.uniform(0.5, 2.2))  # embedding, then the per-document commits
    run_worker(folder, data_dir, kill_after=None)  # a clean restart finishes the job

    kb = open_kb(data_dir=data_dir)
    (report,) = kb.sync()
    assert not report.changed  # the restart already converged
    assert_consistent(kb)
    fresh = open_kb(data_dir=tmp_path / "fresh")
    fresh.sync()
    assert kb.store.manifest.all_chunk_ids() == fresh.store.manifest.all_chunk_ids()
    assert {d.doc_id for d in kb.store.manifest.documents()} == {p.name for p in folder.glob("*.md")}
