"""Per-request settings: a whitelist. A question may change the shared ``[answer]`` settings (not
the mode or the system prompt) and the settings its mode names in ``request_settings``; nothing
else, so that no request names a model, a path or a file. Values keep the type of their default."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any

from knowledge.config import config_key
from knowledge.errors import ConfigError
from knowledge.registry import load_plugin

from .config import MODES_GROUP, SHARED_KEYS, and_list, moved_to

SHARED_REQUEST_KEYS = tuple(k for k in SHARED_KEYS if k not in ("mode", "system_prompt"))


def request_keys(mode_cls: type) -> dict[str, str]:
    """The keys a request may send for this mode -> the field each sets (``lambda`` -> ``lambda_``)."""
    own = {config_key(name): name for name in mode_cls.request_settings}
    return {**{k: k for k in SHARED_REQUEST_KEYS}, **own}


def question_settings(mode_cls: type, defaults: Any, overrides: Mapping[str, Any]) -> Any:
    """``defaults`` (a QuestionSettings) with ``overrides`` applied: unknown keys are refused naming the
    allowed ones (and where a key that moved went), wrong types and invalid values are ConfigErrors."""
    allowed = request_keys(mode_cls)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ConfigError(unknown_message(unknown[0], mode_cls.name, allowed))
    shared, own = {}, {}
    for key, value in overrides.items():
        name = allowed[key]
        is_shared = key in SHARED_REQUEST_KEYS
        target = defaults.shared if is_shared else defaults.own
        value = checked(key, value, typing.get_type_hints(type(target))[name], getattr(target, name))
        (shared if is_shared else own)[name] = value
    return dataclasses.replace(defaults, shared=dataclasses.replace(defaults.shared, **shared),
                               own=dataclasses.replace(defaults.own, **own) if own else defaults.own)


def unknown_message(key: str, mode: str, allowed: Mapping[str, str]) -> str:
    moved = [(name, new) for name, new in moved_to(key) if new in request_keys(_registered(name))]
    hint = f" ({key} moved: send it as {and_list([f'{new} with mode {name}' for name, new in moved])})" if moved else ""
    return f"unknown answer setting '{key}' for mode {mode}{hint}; settable: {', '.join(allowed)}"


def _registered(name: str) -> type:
    return load_plugin(MODES_GROUP, name, what="mode")


def checked(key: str, value: Any, hint: Any, default: Any) -> Any:
    """The value, if it has the type of its setting: ints may stand for floats, a bool is never a
    number, a string never a number, numbers are finite, lists of strings are tuples, a choice
    (``Literal``) is one of its values."""
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        if value not in choices or type(value) is not type(choices[0]):
            raise ConfigError(f"answer setting {key} = {value!r}: use one of {', '.join(map(str, choices))}")
        return value
    if isinstance(default, tuple):
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"answer setting {key} = {value!r}: expected a list of strings")
    ok = isinstance(value, type(default)) and not (isinstance(value, bool) and not isinstance(default, bool))
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise ConfigError(f"answer setting {key} = {value!r}: expected {type(default).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"answer setting {key} = {value!r}: expected a finite number")
    return value


