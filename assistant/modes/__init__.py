"""Answer modes, registered in the entry-point group ``footnotes.modes`` (see pyproject.toml)."""
