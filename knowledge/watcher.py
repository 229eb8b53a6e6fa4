"""The folder watcher lives with the folder source: knowledge/sources/folder_watcher.py."""

from .sources.folder_watcher import MAX_OPEN_WAIT, _DirtySet, _OverflowAlarm, _RootWatch, watch_folder  # noqa: F401
