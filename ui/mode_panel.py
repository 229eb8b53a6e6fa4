"""The web page's "Settings for this mode" panel, built from what the modes declare: a few shared
[answer] settings, and each mode's ``request_settings`` with the type, default and ``# comment`` of
its ``Settings`` dataclass. No mode is named here, and nothing here imports Gradio."""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from assistant.config import AnswerConfig
from assistant.engine import mode_class
from knowledge.config import config_key, field_comments

# Shared settings on the panel: (field, element id, label, shown only for modes that retrieve).
SHARED_PANEL = (
    ("k", "fn-k", "k: chunks retrieved per question", True),
    ("prior_temperature", "fn-temperature", "Prior temperature: p(z|x) = softmax(score / T)", True),
    ("max_new_tokens", "fn-max-tokens", "Max answer tokens", False),
)
KINDS = ("bool", "int", "float", "choice", "text")


@dataclass(frozen=True)
class PanelSetting:
    """One input of the panel: the request key it sets, for which modes, and how it is shown."""

    key: str  # the key of the HTTP API's ``settings`` (``lambda``, not the field ``lambda_``)
    elem_id: str
    label: str
    kind: str  # one of KINDS
    default: Any
    help: str = ""
    choices: tuple[Any, ...] = ()
    modes: tuple[str, ...] = ()  # the modes it is shown for

    def value_of(self, raw: Any) -> Any:
        """The widget's value as the setting's type (a Number widget gives floats, a checkbox None)."""
        if self.kind == "bool":
            return bool(raw)
        if self.kind == "int":
            return int(raw)
        if self.kind == "float":
            return float(raw)
        return raw


def kind_of(hint: Any) -> tuple[str, tuple[Any, ...]]:
    """The widget kind of a field's type, and its choices (a ``Literal``'s values)."""
    if typing.get_origin(hint) is typing.Literal:
        return "choice", typing.get_args(hint)
    return {bool: "bool", int: "int", float: "float"}.get(hint, "text"), ()


def mode_settings(name: str, own: Any) -> list[PanelSetting]:
    """The panel inputs of mode ``name``: its ``request_settings``, valued at ``own`` (its configured defaults)."""
    cls = mode_class(name)
    hints = typing.get_type_hints(cls.Settings)
    comments = field_comments(cls.Settings)
    out = []
    for field in cls.request_settings:
        key = config_key(field)
        kind, choices = kind_of(hints[field])
        out.append(PanelSetting(key, f"fn-setting-{name}-{key}", key.replace("_", " "), kind, getattr(own, field),
                                comments.get(field, ""), choices, (name,)))
    return out


def panel(modes: Sequence[str], shared: AnswerConfig, own: Mapping[str, Any]) -> list[PanelSetting]:
    """Every input of the panel: the shared ones, then each mode's (``own``: mode -> its settings)."""
    retrieving = tuple(m for m in modes if mode_class(m).uses_retrieval)
    comments = field_comments(AnswerConfig)
    hints = typing.get_type_hints(AnswerConfig)
    out = [PanelSetting(name, elem_id, label, kind_of(hints[name])[0], getattr(shared, name), comments.get(name, ""),
                        (), retrieving if needs_retrieval else tuple(modes))
           for name, elem_id, label, needs_retrieval in SHARED_PANEL]
    for m in modes:
        out += mode_settings(m, own[m])
    return out


def overrides_of(settings: Sequence[PanelSetting], mode: str, values: Sequence[Any]) -> dict[str, Any]:
    """The per-request settings of one question: the values of the inputs shown for ``mode``."""
    return {s.key: s.value_of(v) for s, v in zip(settings, values) if mode in s.modes}


def visible(settings: Sequence[PanelSetting], mode: str) -> list[bool]:
    return [mode in s.modes for s in settings]
