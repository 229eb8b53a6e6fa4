"""Footnotes' knowledge side: sources, loaders, chunking, indexes, sync, watcher, retrieval.

Never imports ``assistant`` or ``ui``.
"""
