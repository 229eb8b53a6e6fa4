"""The `footnotes` command line: global options, the subcommands, and errors as one clear line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
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


OWN_LOGGERS = ("knowledge", "assistant", "ui")


def _actionable(record: logging.LogRecord) -> bool:
    """Our own warnings say what to do; a library's warnings and chatter are for developers (``-v``)."""
    return record.name.split(".")[0] in OWN_LOGGERS or record.levelno >= logging.ERROR


def configure_output(verbose: bool) -> None:
    """Without ``-v``: our warnings and every error, nothing else (no torch deprecation notices, no
    library chatter). With ``-v``: progress details and every library warning, through logging."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if verbose:
        warnings.simplefilter("default")  # deprecations included
        logging.captureWarnings(True)
    else:
        warnings.simplefilter("ignore")  # the `warnings` module is only ever used by libraries here
        handler.addFilter(_actionable)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    args = build_parser().parse_args(argv)
    configure_output(args.verbose)
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
