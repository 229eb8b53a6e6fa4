"""The whole config file: every section of every side, read once at the edge.

Order of precedence for the file: ``--config``, then ``$FOOTNOTES_CONFIG``, then the per-user
config file if it exists, else the built-in defaults (which equal the shipped config.toml).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from assistant.config import AssistantConfig, parse_assistant_config
from knowledge.config import MOVED_SECTIONS, KnowledgeConfig, load_toml, parse_knowledge, parse_section
from knowledge.errors import ConfigError


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"  # bind address; keep 127.0.0.1 unless you know who can reach you
    port: int = 7860  # HTTP port of the web UI and the API
    username: str = ""  # login user; "" = no login ($FOOTNOTES_USERNAME overrides)
    password: str = ""  # login password ($FOOTNOTES_PASSWORD overrides)
    max_upload_bytes: int = 50_000_000  # largest file accepted by an upload
    max_request_bytes: int = 1_048_576  # largest request body other than an upload (chat, search): 413 beyond
    max_question_chars: int = 8000  # longest question (or search query) in characters, refused before the queue
    max_question_tokens: int = 2048  # longest question in generator tokens, refused before the queue
    parallel_answers: int = 8  # answers generated at once (the rest wait in line); 1 = one at a time
    batch_rows: int = 96  # most prompt rows sharing one forward pass (k + 1 per RAG-Token answer; ~9 MB each)
    batch_gather_ms: float = 20.0  # how long a decoding step waits for the other answers' rows to join it


@dataclass(frozen=True)
class FootnotesConfig:
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    assistant: AssistantConfig = field(default_factory=AssistantConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    file: str = "(defaults)"


KNOWLEDGE_SECTIONS = (*(f.name for f in dataclasses.fields(KnowledgeConfig)), *MOVED_SECTIONS)  # old ones too
ASSISTANT_SECTIONS = tuple(f.name for f in dataclasses.fields(AssistantConfig))


def default_config_path() -> Path | None:
    env = os.environ.get("FOOTNOTES_CONFIG")
    if env:
        return Path(env)
    user = Path(platformdirs.user_config_dir("footnotes")) / "config.toml"
    return user if user.exists() else None


def default_data_dir() -> Path:
    env = os.environ.get("FOOTNOTES_DATA_DIR")
    return Path(env) if env else Path(platformdirs.user_data_dir("footnotes"))


def load_config(path: str | Path | None) -> FootnotesConfig:
    """Parse a config file strictly (unknown sections and keys are errors naming the file)."""
    path = Path(path) if path else default_config_path()
    if path is None:
        return FootnotesConfig()
    table = load_toml(path)
    name = str(path)
    known = {*KNOWLEDGE_SECTIONS, *ASSISTANT_SECTIONS, "server"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{name}: unknown section or key '{unknown[0]}'; known sections: {', '.join(sorted(known))}")
    knowledge = parse_knowledge({k: v for k, v in table.items() if k in KNOWLEDGE_SECTIONS}, name)
    assistant = parse_assistant_config(table, name)
    server = check_server(parse_section(ServerConfig, table.get("server", {}), "server", name), name)
    return FootnotesConfig(knowledge, assistant, server, name)


def check_server(server: ServerConfig, name: str) -> ServerConfig:
    """Values a type check lets through but the server cannot run with."""
    for key, least in (("parallel_answers", 1), ("batch_rows", 1), ("batch_gather_ms", 0)):
        value = getattr(server, key)
        if value < least:
            raise ConfigError(f"{name}: [server] {key} = {value} is below {least}; "
                              f"use a value of at least {least} (the default is {getattr(ServerConfig(), key)})")
    return server
