"""`footnotes eval perplexity` (base LM and kNN-LM perplexity of a text over one datastore), and
building the knowledge base's datastore in the foreground with a progress bar (`reindex`)."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from knowledge.errors import ConfigError


def register_eval(evals: argparse._SubParsersAction) -> None:
    p = evals.add_parser("perplexity", help="perplexity of the base LM and of the kNN-LM on a text, per generator token")
    p.add_argument("--datastore", required=True, metavar="DIR_OR_FILE",
                   help="a datastore folder (or a data dir holding knn/), or a text file to build one from (kept "
                        "under <data dir>/eval/ and reused)")
    p.add_argument("--text", required=True, help="the text file to score")
    p.add_argument("--lambda", dest="lambdas", help="λ values, comma-separated (default: [answer.knn-lm] lambda)")
    p.add_argument("--k", type=int, help="neighbours per token (default: [answer.knn-lm] neighbours)")
    p.add_argument("--temperature", type=float, help="T of p_kNN (default: [answer.knn-lm] temperature)")
    p.add_argument("--tokens", type=int, default=0, help="score only the first N tokens of --text")
    p.add_argument("--datastore-tokens", type=int, default=0, help="build from only the first N tokens of a text file")
    p.add_argument("--json", action="store_true", help='print {"tokens", "base", "knn": {"<λ>": perplexity}}')
    p.set_defaults(run=cmd_eval_perplexity)


def cmd_eval_perplexity(args, ctx) -> int:
    from assistant.generator import Generator
    from assistant.knn.perplexity import evaluate_perplexity
    from knowledge.progress import TqdmProgress

    from assistant.modes.base import own_settings
    from assistant.modes.knn_lm import KnnLmMode

    own, knn = own_settings(KnnLmMode, ctx.config.assistant.answer), ctx.config.assistant.knn
    lambdas = parse_lambdas(args.lambdas) if args.lambdas else [own.lambda_]
    text_path = Path(args.text)
    if not text_path.is_file():
        raise ConfigError(f"--text {args.text}: no such file")
    generator = Generator.from_config(ctx.config.assistant.generator)
    datastore = open_or_build(args, ctx, generator)
    progress = TqdmProgress(min_total=1)
    try:
        result = evaluate_perplexity(generator, datastore, text_path.read_text(encoding="utf-8"), lambdas,
                                     args.k or own.neighbours, args.temperature or own.temperature, knn,
                                     args.tokens, progress)
    finally:
        progress.close()
        datastore.close()
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    print(f"{'tokens':10}{result.tokens:>10}   (datastore: {len(datastore)} entries, {datastore.index_kind})")
    print(f"{'base':10}{result.base:>10.2f}")
    for lam, ppl in result.knn:
        print(f"{'λ = ' + format(lam, 'g'):10}{ppl:>10.2f}   ({100 * (ppl / result.base - 1):+.1f}%)")
    return 0


def parse_lambdas(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--lambda {text}: use numbers between 0 and 1, comma-separated, e.g. 0.25,0.5") from None
    if not values or any(not 0 <= v <= 1 for v in values):
        raise ConfigError(f"--lambda {text}: every λ must be between 0 and 1")
    return values


def open_or_build(args, ctx, generator):
    """The datastore named by --datastore: an existing folder, or one built from a text file."""
    from assistant.knn.perplexity import datastore_from_text
    from assistant.knn.sync import open_datastore
    from knowledge.errors import NotReadyError
    from knowledge.progress import TqdmProgress

    knn = ctx.config.assistant.knn
    path = Path(args.datastore)
    if path.is_file():
        progress = TqdmProgress(min_total=1)
        try:
            return datastore_from_text(generator, path, text_datastore_dir(ctx.data_dir, path, args.datastore_tokens, knn),
                                       knn, args.datastore_tokens, progress)
        finally:
            progress.close()
    root = path if (path / "meta.json").is_file() else path / "knn"
    if not (root / "meta.json").is_file():
        raise ConfigError(f"--datastore {args.datastore}: neither a text file nor a kNN-LM datastore folder "
                          "(one holding meta.json, or a data dir holding knn/meta.json)")
    datastore = open_datastore(root, generator, knn, write=False)
    if not datastore.complete:
        raise NotReadyError(f"the kNN-LM datastore {root} is not built yet; try again when it is")
    return datastore


def text_datastore_dir(data_dir: Path, text: Path, tokens: int, knn) -> Path:
    """Where the datastore of a text file lives: one per file content and build settings."""
    h = hashlib.sha1()
    with open(text, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    h.update(f"{tokens}/{knn.context_tokens}/{knn.stride_tokens}".encode())
    return Path(data_dir) / "eval" / f"knn-{text.stem}-{h.hexdigest()[:12]}"


def build_datastore(resources, generator) -> None:
    """Bring ``<data dir>/knn`` in step with the knowledge base now, with a progress bar (the CLI
    answers one question and exits: a background build would never finish)."""
    from assistant.config import KnnConfig
    from assistant.knn.sync import datastore_service
    from knowledge.progress import TqdmProgress

    service = datastore_service(resources.data_dir, resources.store, generator, resources.knn or KnnConfig())
    progress = TqdmProgress()
    try:
        service.build(progress)
    finally:
        progress.close()
