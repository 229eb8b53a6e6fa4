"""Run one sync of FOLDER into DATA_DIR with the fake embedder (a subprocess the crash tests kill)."""

import sys
import time

from knowledge.kb import KnowledgeBase
from tests.conftest import small_config
from tests.fakes import HashingEmbedder


class SlowEmbedder(HashingEmbedder):
    """Gives the kill a wide window inside the embedding step as well as between writes."""

    def embed_batch(self, texts):
        time.sleep(0.002 * len(texts))
        return super().embed_batch(texts)


if __name__ == "__main__":
    folder, data_dir = sys.argv[1], sys.argv[2]
    kb = KnowledgeBase.open(small_config(), data_dir, folder=folder, embedder=SlowEmbedder())
    print("opened", flush=True)
    kb.sync()
    kb.close()
    print("done", flush=True)
