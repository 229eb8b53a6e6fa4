"""kill -9 at any point of an ingest or of a watcher's burst of syncs: after a restart the indexes
converge to the folder, with nothing duplicated, orphaned or missing. Delays are seeded: a failure
replays."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import assert_consistent

pytestmark = pytest.mark.slow  # kill -9 rounds: `make test`, not `make check`

ROOT = Path(__file__).resolve().parent.parent


def make_corpus(folder: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(400)]
    for i in range(n):
        paras = ["# Doc %d" % i] + [" ".join(rng.choices(words, k=rng.randint(10, 60))) for _ in range(rng.randint(1, 6))]
        (folder / f"d{i:03d}.md").write_text("\n\n".join(paras) + "\n")


def run_worker(folder: Path, data_dir: Path, kill_after: float | None, during=None) -> bool:
    """Run a sync in a subprocess; kill -9 it ``kill_after`` seconds after it opened. True if it finished.

    ``during(proc)``, if given, runs once the worker is up (e.g. a burst of file changes to watch)."""
    args = [sys.executable, "-m", "tests.crash_worker", str(folder), str(data_dir)] + (["watch"] if during else [])
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "opened", proc.stderr.read()
    changes = threading.Thread(target=during or (lambda: None), daemon=True)
    if during is not None:
        assert proc.stdout.readline().strip() == "watching", proc.stderr.read()
        changes.start()
    if kill_after is not None:
        time.sleep(kill_after)
        proc.kill()
    out, err = proc.communicate(timeout=300)
    if during is not None:
        changes.join(timeout=30)
    if kill_after is None:
        assert proc.returncode == 0, err
    return "done" in out


def assert_matches_folder(kb, folder: Path, fresh_dir: Path, open_kb) -> None:
    assert_consistent(kb)
    fresh = open_kb(data_dir=fresh_dir)
    fresh.sync()
    assert kb.store.manifest.all_chunk_ids() == fresh.store.manifest.all_chunk_ids()
    assert {d.doc_id for d in kb.store.manifest.documents()} == {p.name for p in folder.glob("*.md")}


def test_kill_minus_9_during_ingest_converges(folder, open_kb, tmp_path):
    make_corpus(folder, 120, seed=1)
    data_dir = tmp_path / "data"
    rng = random.Random(7)
    for round_ in range(12):
        if round_ == 3:  # the folder changes between crashes too
            for p in sorted(folder.glob("*.md"))[:20]:
                p.unlink()
            make_corpus(folder, 10, seed=99)
        run_worker(folder, data_dir, kill_after=rng.uniform(0.5, 2.2))  # embedding, then the per-document commits
    run_worker(folder, data_dir, kill_after=None)  # a clean restart finishes the job

    kb = open_kb(data_dir=data_dir)
    (report,) = kb.sync()
    assert not report.changed  # the restart already converged
    assert_matches_folder(kb, folder, tmp_path / "fresh", open_kb)


def burst(folder: Path, seed: int, n: int = 60) -> None:
    """Creates, edits, renames and deletes, interleaved, a few milliseconds apart."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(400)]
    for i in range(n):
        files = sorted(folder.glob("*.md"))
        op = rng.choice(["create", "edit", "rename", "delete"] if len(files) > 5 else ["create"])
        try:
            if op == "create":
                (folder / f"b{seed}-{i}.md").write_text(" ".join(rng.choices(words, k=rng.randint(20, 200))))
            elif op == "edit":
                rng.choice(files).write_text(" ".join(rng.choices(words, k=rng.randint(20, 200))))
            elif op == "rename":
                rng.choice(files).rename(folder / f"r{seed}-{i}.md")
            else:
                rng.choice(files).unlink()
        except FileNotFoundError:
            pass
        time.sleep(rng.uniform(0, 0.02))


def test_kill_minus_9_during_a_watcher_burst_converges(folder, open_kb, tmp_path):
    make_corpus(folder, 40, seed=2)
    data_dir = tmp_path / "data"
    run_worker(folder, data_dir, kill_after=None)  # the first ingest; the watcher is killed from now on
    rng = random.Random(17)
    for round_ in range(10):
        run_worker(folder, data_dir, kill_after=rng.uniform(0.3, 1.6),
                   during=lambda round_=round_: burst(folder, seed=100 + round_))

    kb = open_kb(data_dir=data_dir)  # a restart: reconcile, then the catch-up sync any watcher starts with
    kb.sync()
    assert_matches_folder(kb, folder, tmp_path / "fresh", open_kb)
