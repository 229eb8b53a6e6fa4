"""Knowledge sources. Each kind is registered in the entry-point group ``footnotes.sources``."""

from .base import Change, Source

__all__ = ["Change", "Source"]
