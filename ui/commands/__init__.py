"""CLI subcommands, one module per side; each has ``register(subparsers)``."""
