"""Footnotes' assistant side: generator, answer modes, dialogue engine, provenance, evaluation.

Never imports ``ui``.
"""
