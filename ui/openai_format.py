"""The OpenAI chat-completions wire format, both ways: messages to a question and its history, and an
Answer to a completion (or to stream chunks). Provenance rides along in extra fields that OpenAI
clients ignore: ``footnotes`` (``Answer.to_json()``) and, per streamed token, ``footnotes_token``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from assistant.answer import Answer, TokenProvenance
from assistant.conversation import Turn

IGNORED_ROLES = ("system", "developer")  # Footnotes builds its own system prompt around the chunks


@dataclass(frozen=True)
class Completion:
    """The identity shared by every chunk of one streamed completion."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, model: str) -> Completion:
        return cls(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), model)


def message_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"message content part of type {kind!r} is not supported; send text only")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise ValueError("message content must be a string or a list of text parts")


def question_and_history(messages: Sequence[dict[str, Any]]) -> tuple[str, list[Turn]]:
    """The last user message is the question; earlier user/assistant messages are the history."""
    turns: list[Turn] = []
    for i, m in enumerate(messages):
        role = m.get("role")
        if role in IGNORED_ROLES:
            continue
        if role not in ("user", "assistant"):
            raise ValueError(f"messages[{i}].role = {role!r}: use system, user or assistant")
        turns.append(Turn(role, message_text(m.get("content"))))
    if not turns or turns[-1].role != "user":
        raise ValueError("the last message must be a user message with the question")
    question = turns[-1].text
    if not question.strip():
        raise ValueError("the question (the last user message) is empty")
    return question, turns[:-1]


def finish_reason(answer: Answer, max_new_tokens: int) -> str:
    return "length" if len(answer.tokens) >= max_new_tokens else "stop"


def completion(answer: Answer, c: Completion, max_new_tokens: int) -> dict[str, Any]:
    return {
        "id": c.id,
        "object": "chat.completion",
        "created": c.created,
        "model": c.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                     "finish_reason": finish_reason(answer, max_new_tokens)}],
        "footnotes": answer.to_json(),
    }


def _chunk(c: Completion, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": c.id, "object": "chat.completion.chunk", "created": c.created, "model": c.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def first_chunk(c: Completion) -> dict[str, Any]:
    return _chunk(c, {"role": "assistant", "content": ""})


def token_chunk(token: TokenProvenance, c: Completion) -> dict[str, Any]:
    return _chunk(c, {"content": token.text}, footnotes_token=token.to_json())


def last_chunk(answer: Answer, c: Completion, max_new_tokens: int) -> dict[str, Any]:
    return _chunk(c, {}, finish_reason(answer, max_new_tokens), footnotes=answer.to_json())


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event: ``data: <json>`` and a blank line."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


def error_body(message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code}}
