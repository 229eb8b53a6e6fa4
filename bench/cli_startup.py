"""CLI start-up: wall time of `footnotes status`, `search` and `ask` as fresh processes, against
`python -c "import torch"` measured in the same run (the machine is shared: compare ratios).

    .venv/bin/python bench/cli_startup.py [--rounds 5] [--baseline REV] [--server] [--no-ask] [--no-write]

The sample folder is ingested once into a temporary data dir; then every round runs each command once,
in turn (so all of them see the same load), as a new process with HF_HUB_OFFLINE=1: "cold" means a new
process, not an empty page cache. ``--baseline REV`` also runs the commands from a `git archive` of
that revision (same venv, same data dir), e.g. the commit before the start-up work, so the old and
the new code are measured side by side. ``--server`` also starts `footnotes serve` on the data dir and
times `status` and `search` answered through it (ui/server_link.py); the cold rows hide its
announcement (``server.json``) meanwhile, so they answer by themselves.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, publish

HEADING = "## CLI start-up (status, search, ask)"
QUESTION = "Where was Marie Curie born?"


NOTES = """\
Where the time went before (`python -X importtime` and cProfile of `footnotes search`, same machine):
`status` loaded the embedding model it never uses (importing sentence-transformers, 2.9 s beyond torch
and transformers; the model, 0.2 s; int8 quantization, 0.2–0.6 s); `search` spent its time importing
torch (1.0–1.4 s), transformers (0.55 s) and sentence-transformers (2.9 s, of which transformers'
model classes 1.8 s, scikit-learn 1.3 s), quantizing (0.6 s, half of it in the per-channel observer's
`aminmax`) and importing chromadb (0.6–0.9 s). Now: the embedder loads on first use (`status` imports
no torch; a test runs it with torch unimportable); MiniLM runs through `knowledge/bert_encoder.py` (torch
+ safetensors + tokenizers, weights loaded on the meta device: 0.06 s) with sentence-transformers'
vectors (see "Embedding loaders"), and int8 builds quantize_dynamic's exact modules with numpy min/max
(0.3 s). What is left of `search` beyond `import torch`: chromadb's import and open, quantization,
the CLI's own imports (numpy, the knowledge package, 0.25 s) and the search. `ask` is dominated by the
generator (loading SmolLM2 and decoding), which this work does not change; its spread is the
machine's load. `status` (knowledge/status.py) opens no Chroma client: the manifest gives documents,
chunks, failures and the last sync, `bm25.npz`'s id array header the BM25 count, and one read-only SQL
query on the embedded store's `chroma.sqlite3` Chroma's own count (chromadb only for a `chroma run`
server or a store that query cannot read), so it imports neither chromadb (0.6–0.9 s before) nor numpy;
what is left is Python, the CLI's parser and config (~0.3 s). Through a running `footnotes serve` of the
same data dir (it announces itself in `server.json`), `search` and `status` ask it over HTTP and load
nothing: `search` then costs what `status` does plus the server's search. `ask` through the server is
not built (it loads the generator itself)."""


def commands(ask: bool) -> dict[str, list[str]]:
    out = {
        "status": ["status"],
        "status --json": ["status", "--json"],
        "search": ["search", QUESTION, "--k", "3"],
    }
    if ask:
        out["ask (rag-token, k=2)"] = ["ask", QUESTION, "--k", "2", "--mode", "rag-token"]
    return out


def timed(argv: list[str], cwd: Path) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed in {cwd}:\n{proc.stderr}")
    return seconds


SERVER_COMMANDS = ("status", "status --json", "search")


def start_server(data: Path, folder: Path) -> subprocess.Popen:
    """`footnotes serve` on ``data`` (any free port), once it has announced itself."""
    proc = subprocess.Popen([sys.executable, "-m", "ui.cli", "--data-dir", str(data), "serve", "--knowledge",
                             str(folder), "--port", "0"], cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (data / "server.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit("footnotes serve did not start")
        time.sleep(0.5)
    return proc


def export(rev: str, dest: Path) -> Path:
    """The tree of ``rev`` in ``dest`` (git archive: no checkout, the working tree is not touched)."""
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline", help="also time the commands of this git revision")
    ap.add_argument("--server", action="store_true", help="also time status and search through `footnotes serve`")
    ap.add_argument("--no-ask", action="store_true", help="skip `footnotes ask` (it loads the generator)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="footnotes-startup-") as tmp:
        work = Path(tmp)
        folder = shutil.copytree(ROOT / "sample", work / "sample")
        data = work / "data"
        subprocess.run([sys.executable, "-m", "ui.cli", "--data-dir", str(data), "ingest", str(folder)], cwd=ROOT,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True, capture_output=True)
        trees = {"now": ROOT}
        if args.baseline:
            trees[args.baseline] = export(args.baseline, Path(tempfile.mkdtemp(dir=work)))
        runs: dict[tuple[str, str], list[float]] = {}
        torch_runs: list[float] = []
        server = start_server(data, folder) if args.server else None
        announcement, hidden = data / "server.json", data / "server.json.hidden"
        try:
            for r in range(args.rounds):
                torch_runs.append(timed([sys.executable, "-c", "import torch"], ROOT))
                if server:
                    announcement.rename(hidden)  # the cold rows answer by themselves
                for tree_name, tree in trees.items():
                    for name, argv in commands(not args.no_ask).items():
                        full = [sys.executable, "-m", "ui.cli", "--data-dir", str(data), *argv]
                        runs.setdefault((tree_name, name), []).append(timed(full, tree))
                if server:
                    hidden.rename(announcement)
                    for name, argv in commands(False).items():
                        if name in SERVER_COMMANDS:
                            full = [sys.executable, "-m", "ui.cli", "--data-dir", str(data), *argv]
                            runs.setdefault(("server", name), []).append(timed(full, ROOT))
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            if server:
                server.terminate()
                server.wait(timeout=60)

    torch_median = statistics.median(torch_runs)
    lines = [
        f"`.venv/bin/python bench/cli_startup.py --rounds {args.rounds}"
        + (f" --baseline {args.baseline}" if args.baseline else "") + (" --server" if args.server else "")
        + (" --no-ask" if args.no_ask else "")
        + f"`; {machine()}.",
        "",
        f"Each command a fresh process over the 4-document sample folder, {args.rounds} rounds taking turns; "
        f"`python -c \"import torch\"` in the same rounds: median {torch_median:.2f} s "
        f"(min {min(torch_runs):.2f}, max {max(torch_runs):.2f}). Ratio = the command's median / torch's median.",
        "",
        "| code | command | median s | min s | max s | × import torch |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for (tree_name, name), seconds in runs.items():
        med = statistics.median(seconds)
        code = {"now": "this commit", "server": "this commit, through a running `footnotes serve`"}.get(
            tree_name, f"`{tree_name}`")
        lines.append(f"| {code} | `footnotes {name}` | {med:.2f} | {min(seconds):.2f} | {max(seconds):.2f} | "
                     f"{med / torch_median:.2f}× |")
    lines += ["", NOTES]
    publish(HEADING, "\n".join(lines), not args.no_write)


if __name__ == "__main__":
    main()
