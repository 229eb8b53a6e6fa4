"""The kNN-LM datastore is derived from the knowledge indexes: registered under ``footnotes.derived``
(pyproject.toml) so that `footnotes reindex` wipes it without the knowledge core naming its folder."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

DATASTORE_FOLDER = "knn"  # under the data dir


@dataclass(frozen=True)
class KnnDatastoreData:
    name: str = "knn-lm"

    def exists(self, data_dir: Path) -> bool:
        return (Path(data_dir) / DATASTORE_FOLDER / "meta.json").exists()

    def wipe(self, data_dir: Path) -> None:
        shutil.rmtree(Path(data_dir) / DATASTORE_FOLDER, ignore_errors=True)


KNN_DATASTORE = KnnDatastoreData()
