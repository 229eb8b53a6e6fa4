"""Run one sync of FOLDER into DATA_DIR with the fake embedder (a subprocess the crash tests kill).

``python -m tests.crash_worker FOLDER DATA_DIR [watch]``: with ``watch``, keep watching the folder
after the sync (until killed), as `footnotes watch` does."""

import sys
import threading
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
    watch = sys.argv[3:] == ["watch"]
    config = small_config(rescan_seconds=3600.0)
    kb = KnowledgeBase.open(config, data_dir, folder=folder, embedder=SlowEmbedder())
    print("opened", flush=True)
    kb.sync()
    if watch:
        stop = threading.Event()
        kb.watch(stop)
        print("watching", flush=True)
        stop.wait()
    kb.close()
    print("done", flush=True)
