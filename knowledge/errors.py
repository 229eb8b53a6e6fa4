"""The project's short error hierarchy. Messages say what failed, where, and how to fix it.

The CLI, the HTTP API and the UI translate these into one clear line; nothing else catches broadly.
"""


class FootnotesError(Exception):
    """Base of every error Footnotes raises on purpose."""


class ConfigError(FootnotesError):
    """A malformed or invalid config file or option."""


class UnknownNameError(FootnotesError):
    """A name (mode, source kind, ...) that is not registered; the message lists the registered ones."""


class DocumentError(FootnotesError):
    """One document could not be read or loaded; recorded against that document, others go on."""


class DocumentNotFound(DocumentError):
    """A document id that the index and its source do not hold (the HTTP API answers 404)."""

    status = 404


class IndexUnusableError(FootnotesError):
    """An index (manifest, Chroma, BM25) is missing, corrupt or out of step and cannot be used as is."""


class NotReadyError(FootnotesError):
    """A component is still being built (e.g. the kNN-LM datastore)."""
