"""Data that other parts derive from the knowledge indexes, and wiping it (``footnotes reindex``).

Whoever derives data from the indexes (the assistant's kNN-LM datastore) registers it in the
entry-point group ``footnotes.derived``: an object with a ``name``, ``exists(data_dir)`` and
``wipe(data_dir)``. The knowledge core wipes what is registered and never names those files itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from .registry import load_plugin, registered_names

DERIVED_GROUP = "footnotes.derived"


class DerivedData(Protocol):
    name: str

    def exists(self, data_dir: Path) -> bool:
        """Whether ``data_dir`` holds this data now."""

    def wipe(self, data_dir: Path) -> None:
        """Delete it (it is rebuilt from the indexes)."""


def registered_derived() -> list[DerivedData]:
    return [load_plugin(DERIVED_GROUP, name, "derived data") for name in registered_names(DERIVED_GROUP)]


def held_derived(data_dir: Path) -> tuple[str, ...]:
    """The names of the registered kinds of derived data that ``data_dir`` holds now."""
    return tuple(d.name for d in registered_derived() if d.exists(Path(data_dir)))


def wipe_derived(data_dir: Path) -> None:
    """Wipe every registered kind of derived data in ``data_dir``."""
    for derived in registered_derived():
        derived.wipe(Path(data_dir))
