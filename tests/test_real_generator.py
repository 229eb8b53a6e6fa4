"""Integration: the packaged SmolLM2-135M-Instruct answers from retrieved chunks with rag-token.

Loads the real model (the first run converts the GGUF, about 20 s, and caches a safetensors
copy in the user cache dir; later runs load that in seconds).
"""

import pytest

from assistant.config import AnswerConfig, GeneratorConfig
from assistant.engine import DialogueEngine
from assistant.generator import Generator
from tests import tinylm

pytestmark = pytest.mark.real_models

CHUNKS = [  # invented facts: the model cannot know them without the chunks
    "The Zorblax Festival is held every year in the town of Quillhaven. It was founded in 1873 by the brewer Henrietta Malvern.",
    "Quillhaven is a small fishing town on the northern coast. Its harbour was rebuilt after the storm of 1921.",
    "The Malvern brewery produced a dark ale called Midnight Anchor, which is still sold today.",
]


@pytest.fixture(scope="module")
def generator():
    return Generator.from_config(GeneratorConfig())


def test_rag_token_answers_from_the_right_chunk(generator):
    retriever = tinylm.OverlapRetriever(tinylm.make_chunks(CHUNKS))
    config = AnswerConfig(k=3, max_new_tokens=24, prior_score="uniform")  # provenance from the generator alone
    answer = DialogueEngine(retriever, generator, config).ask("What ale did the Malvern brewery produce?")
    assert "Midnight Anchor" in answer.text
    by_source = {c.source: c for c in answer.chunks}
    right = by_source["doc2.md"]
    assert right.posterior == max(c.posterior for c in answer.chunks)
    z = [c.source for c in answer.chunks].index("doc2.md")
    copied = next(t for t in answer.tokens if t.text.strip() and t.text.strip() in "Midnight")
    assert max(range(3), key=lambda i: copied.posterior[i]) == z
    assert copied.posterior[z] > 0.8
    assert answer.text == "".join(t.text for t in answer.tokens)
