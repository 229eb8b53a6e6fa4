"""Footnotes' edges: the CLI, the HTTP API and the Gradio app (the only place gradio is imported)."""
