"""`python -m tests.fake_cli ARGS`: the `footnotes` command with the fake HashingEmbedder, for CLI-level
fault tests that need a fresh process (exit code, stderr, nothing cached in memory) but not the real model."""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import knowledge.kb  # noqa: E402
from tests.fakes import HashingEmbedder  # noqa: E402
from ui.cli import main  # noqa: E402

knowledge.kb.SentenceTransformerEmbedder = lambda config: HashingEmbedder()

if __name__ == "__main__":
    sys.exit(main())
