"""The `footnotes` command line: global options, the subcommands, and errors as one clear line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from knowledge.errors import FootnotesError

from .settings import FootnotesConfig, default_data_dir, load_config

COMMAND_MODULES = ("ui.commands.knowledge", "ui.commands.assistant", "ui.commands.server")


@dataclass(frozen=True)
class Context:
    """What every command gets: the parsed config and the data dir."""

    config: FootnotesConfig
    data_dir: Path


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="footnotes", description="Chat with your documents, with per-token provenance.")
    parser.add_argument("--config", help="config file (default: $FOOTNOTES_CONFIG, else the built-in defaults)")
    parser.add_argument("--data-dir", help="where indexes and caches live (default: $FOOTNOTES_DATA_DIR or a per-user dir)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
        return int(args.run(args, Context(config, data_dir)) or 0)
    except FootnotesError as exc:
        print(f"footnotes: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("footnotes: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
