"""Plugin lookup through entry points. Built-ins are registered in pyproject.toml exactly like plugins."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from .errors import UnknownNameError

SOURCES_GROUP = "footnotes.sources"


def registered_names(group: str) -> list[str]:
    """The names registered in an entry-point group, sorted."""
    return sorted({ep.name for ep in entry_points(group=group)})


def load_plugin(group: str, name: str, what: str = "plugin") -> Any:
    """The object registered as ``name`` in ``group``; a bad name lists the registered ones."""
    for ep in entry_points(group=group):
        if ep.name == name:
            return ep.load()
    names = registered_names(group)
    raise UnknownNameError(
        f"unknown {what} '{name}'; registered {what}s: {', '.join(names) or '(none)'}"
    )
