"""The own settings of the modes that decode one mixture token by token (rag-token, concat,
closed-book): greedy or beam search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from knowledge.errors import ConfigError


@dataclass(frozen=True)
class BeamSettings:
    beam_size: int = 1  # 1 = greedy, more = beam search on the mixture

    moved_from: ClassVar[dict[str, str]] = {"beam_size": "beam_size"}  # old flat [answer] keys

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ConfigError("beam_size must be >= 1 (1 = greedy)")
