"""kNN-LM: next-token interpolation with a datastore of the knowledge's own contexts (Khandelwal et al. 2020)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import torch

from knowledge.errors import ConfigError, NotReadyError
from knowledge.progress import Progress
from knowledge.types import Hit

from ..answer import Answer, TokenProvenance, chunks_of
from ..config import AnswerConfig, KnnConfig
from ..conversation import Turn
from ..decoding import WordEnds, argmax_choice, greedy
from ..generator import Generator
from ..knn.datastore import Datastore, SearchResult
from ..knn.keys import KeyCapture
from ..knn.math import interpolate, knn_distribution, knn_share, neighbour_logweights
from ..knn.sync import DatastoreService, datastore_service
from ..lockstep import LockstepBatch
from ..prompts import build_prompts, concat_context
from ..refusals import answer_refusals, refusing
from ..support import SupportStream, share_labeller
from .base import ModeBase, ModeResources, QuestionSettings, doc_logprior
from .mixture import with_texts

KNN_DOCUMENT_SHARE = 0.5  # a token is "document" when the datastore gives at least half its probability
CONTEXT_BEFORE = 80  # characters of a neighbour's chunk shown before its position
CONTEXT_AFTER = 40  # ... and from it on


@dataclass(frozen=True)
class Neighbour:
    """A datastore entry that predicted an answer token: where its context is, how near it was,
    and its weight in p_kNN."""

    chunk_id: str
    source: str
    position: int  # index of the predicted token among its chunk's tokens
    start: int  # character offset of the predicted token in its chunk's text
    distance: float  # squared L2 between its key and the answer's query
    weight: float  # softmax(−d/T) of this neighbour among the k
    text: str  # the chunk's text around the position
    text_offset: int  # where in ``text`` the predicted token starts

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class KnnEvidence:
    """kNN-LM's part of a token's provenance (``TokenProvenance.extra``): the neighbours that
    predicted it and λ·p_kNN(w)/p(w), the datastore's share of its probability."""

    neighbours: tuple[Neighbour, ...]
    share: float

    def to_json(self) -> dict[str, Any]:
        return {"neighbours": [n.to_json() for n in self.neighbours], "knn_share": self.share}


@dataclass(frozen=True)
class KnnLmSettings:
    neighbours: int = 1024  # datastore neighbours retrieved at each step (the paper's k)
    lambda_: float = 0.25  # p(w) = λ·p_kNN(w) + (1 − λ)·p_LM(w); the paper: 0.25 in-domain, about 0.65 for a new domain
    temperature: float = 1.0  # p_kNN(w) ∝ Σ exp(−d / T) over the neighbours whose next token is w (d: squared L2)
    retrieval_conditioned: bool = False  # also put the retrieved chunks in the prompt (as the concat mode does)
    neighbours_shown: int = 5  # neighbours listed with each answer token (nearest of those that predicted it)

    moved_from: ClassVar[dict[str, str]] = {
        "knn_k": "neighbours", "knn_lambda": "lambda", "knn_temperature": "temperature",
        "knn_retrieval_conditioned": "retrieval_conditioned", "knn_neighbours_shown": "neighbours_shown",
    }

    def __post_init__(self) -> None:
        if self.neighbours < 1 or self.neighbours_shown < 0:
            raise ConfigError("knn-lm: neighbours must be >= 1 and neighbours_shown >= 0")
        if not 0 <= self.lambda_ <= 1:
            raise ConfigError("knn-lm: lambda must be between 0 (the plain LM) and 1 (the datastore alone)")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError("knn-lm: temperature must be > 0")


@dataclass(frozen=True)
class _Step:
    """What one decoding step retrieved: the valid neighbours and log p_kNN over the vocabulary."""

    found: SearchResult
    knn_logprobs: torch.Tensor | None  # (V,), None when the datastore gave no neighbour


class KnnLmMode(ModeBase):
    """Greedy decoding of p(w) = λ·p_kNN(w) + (1 − λ)·p_LM(w), p_kNN from the k nearest datastore keys.

    The prompt is the question alone or, with ``retrieval_conditioned``, the question with the
    retrieved chunks (as in ``concat``). Each token carries the neighbours that predicted it and
    λ·p_kNN(w)/p(w), the datastore's share of its probability (:class:`KnnEvidence`). Beam search is
    not used here: the provenance of a greedy step is the one search that chose it.
    """

    name = "knn-lm"
    Settings = KnnLmSettings
    request_settings = ("neighbours", "lambda_", "temperature", "retrieval_conditioned", "neighbours_shown")

    def __init__(self, generator: Generator, config: AnswerConfig, service: DatastoreService | Datastore | None = None,
                 settings: KnnLmSettings | None = None) -> None:
        super().__init__(generator, config, settings)
        self.service = service

    @classmethod
    def create(cls, generator: Generator, config: AnswerConfig, resources: ModeResources) -> "KnnLmMode":
        if resources.data_dir is None:
            return cls(generator, config)
        service = datastore_service(resources.data_dir, resources.store, generator, resources.knn or KnnConfig())
        if resources.store is not None:
            service.start()  # a first build begins now, not at the first question
        return cls(generator, config, service)

    def retrieves(self, settings: QuestionSettings) -> bool:
        return settings.own.retrieval_conditioned

    def prepare(self, progress: Progress | None = None) -> None:
        """Bring the datastore in step with the knowledge base now (the CLI answers one question and
        exits: a background build would never finish)."""
        if isinstance(self.service, DatastoreService):
            self.service.build(progress)

    def datastore(self) -> Datastore:
        if self.service is None:
            raise NotReadyError("the kNN-LM mode has no datastore: it needs a data dir (a knowledge base); "
                                "use --mode rag-token")
        return self.service if isinstance(self.service, Datastore) else self.service.ready()

    def stream(self, question: str, history: Sequence[Turn], hits: Sequence[Hit],
               settings: QuestionSettings | None = None) -> Iterator[TokenProvenance | Answer]:
        settings = settings or self.defaults()
        cfg, own = settings.shared, settings.own
        datastore = self.datastore()
        conditioned = own.retrieval_conditioned and bool(hits)
        context = concat_context(hits, question, cfg) if conditioned else None
        prompts = build_prompts(self.generator, question, history, [context], cfg)
        batch = LockstepBatch(self.generator.model, prompts, self.generator.pad_id)
        steps: list[_Step] = []
        tokens: list[TokenProvenance] = []
        hits = hits if conditioned else ()
        index = {h.chunk.chunk_id: z for z, h in enumerate(hits)}
        labels = SupportStream(share_labeller(question, KNN_DOCUMENT_SHARE), question)
        pending: list[TokenProvenance] = []
        with KeyCapture(self.generator.model) as capture:
            combine = self._combine(datastore, capture, steps, own)
            choose = refusing(argmax_choice, self.generator.decode, self.generator.eos_ids, answer_refusals(cfg, question))
            decoded = greedy(batch, combine, self.generator.eos_ids, cfg.max_new_tokens, choose,
                             words=WordEnds(self.generator.decode), finish_word_tokens=cfg.finish_word_tokens)
            for i, (step, text) in enumerate(with_texts(self.generator, decoded, cfg.stop)):
                pending.append(self._provenance(datastore, steps[i], step.token_id, step.logprob, text, own))
                for j, support in labels.push(text, self._evidence(pending[-1], index)):
                    tokens.append(replace(pending[j], support=support))
                    yield tokens[-1]
        for j, support in labels.finish():
            tokens.append(replace(pending[j], support=support))
            yield tokens[-1]
        chunks = chunks_of(hits, doc_logprior(hits, cfg).exp().tolist(), None) if conditioned else ()
        yield Answer("".join(t.text for t in tokens), self.name, chunks, tuple(tokens))

    @staticmethod
    def _evidence(token: TokenProvenance, index: dict[str, int]) -> tuple[float, int | None]:
        """(the datastore's share, the nearest voter's chunk where it is one of the answer's chunks)."""
        knn = token.extra
        nearest = index.get(knn.neighbours[0].chunk_id) if knn.neighbours else None
        return knn.share, nearest

    @staticmethod
    def _combine(datastore: Datastore, capture: KeyCapture, steps: list[_Step], own: KnnLmSettings):
        def combine(row_logprobs: torch.Tensor) -> torch.Tensor:
            lm = row_logprobs[:, 0]  # (1, 1, V) -> (1, V)
            found = datastore.search(capture.last().numpy(), own.neighbours)  # (1, k) each
            valid = found.ids[0] >= 0
            if not valid.any():  # an empty datastore: p_kNN is undefined, the LM decides alone
                steps.append(_Step(found, None))
                return lm
            distances = torch.from_numpy(found.distances[0][valid])  # (k',)
            values = torch.from_numpy(found.values[0][valid])  # (k',)
            knn = knn_distribution(distances, values, lm.shape[-1], own.temperature)  # (V,)
            steps.append(_Step(found, knn))
            return interpolate(lm[0], knn, own.lambda_).unsqueeze(0)  # (1, V)

        return combine

    def _provenance(self, datastore: Datastore, step: _Step, token: int, logprob: float, text: str,
                    own: KnnLmSettings) -> TokenProvenance:
        if step.knn_logprobs is None:
            return TokenProvenance(text, math.exp(logprob), (), extra=KnnEvidence((), 0.0))
        share = float(knn_share(torch.tensor(logprob, dtype=torch.float64), step.knn_logprobs[token], own.lambda_))
        evidence = KnnEvidence(self._neighbours(datastore, step.found, token, own), share)
        return TokenProvenance(text, math.exp(logprob), (), extra=evidence)

    @staticmethod
    def _neighbours(datastore: Datastore, found: SearchResult, token: int, own: KnnLmSettings) -> tuple[Neighbour, ...]:
        """The nearest neighbours whose next token is the chosen one (those that voted for it)."""
        valid = found.ids[0] >= 0
        distances = found.distances[0][valid]  # (k',)
        weights = neighbour_logweights(torch.from_numpy(distances), own.temperature).exp()  # (k',)
        voters = np.flatnonzero(found.values[0][valid] == token)[: own.neighbours_shown]
        out = []
        for j in voters:
            info = datastore.info(int(found.ids[0][valid][j]))
            text, lo = info.chunk.text, max(0, info.char_position - CONTEXT_BEFORE)
            out.append(Neighbour(info.chunk.chunk_id, info.chunk.source, info.token_position, info.char_position,
                                 float(distances[j]), float(weights[j]), text[lo : info.char_position + CONTEXT_AFTER],
                                 info.char_position - lo))
        return tuple(out)
