"""The HTTP API: OpenAI-compatible chat completions, search, models, documents. Errors are JSON
(OpenAI's ``{"error": {"message", "type", "code"}}``) with the status code that fits."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from assistant.answer import Answer
from knowledge.errors import (ConfigError, DocumentError, FootnotesError, IndexUnusableError, NotReadyError,
                              UnknownNameError)
from knowledge.retrieval import Filters

from . import openai_format as oa
from .service import Service, check_text

log = logging.getLogger(__name__)
MAX_UPLOAD_FILES = 20
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and headers on top of the files themselves
_DONE = object()


class _Strict(BaseModel):
    """Numbers are numbers (not ``true`` or ``"3"``), booleans are booleans (not ``"yes"``), and no value
    anywhere in the body is NaN, an infinity or a string with a lone surrogate."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _well_formed(cls, data: Any) -> Any:
        check_values(data, ())
        return data


class Message(_Strict):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Any = None


class ChatRequest(_Strict):
    """OpenAI's request body; fields Footnotes does not use (temperature, top_p, n, user, ...) are ignored
    (but must still be well-formed JSON values)."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None  # the answer mode; None or "" = the configured default
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    k: int | None = Field(default=None, ge=1)
    settings: dict[str, Any] = Field(default_factory=dict)  # shared [answer] settings and the mode's request_settings, e.g. {"prior_temperature": 0.2}


class SearchRequest(_Strict):
    model_config = ConfigDict(extra="forbid")
    query: str
    k: int | None = None
    prefix: str = ""
    types: list[str] = Field(default_factory=list)


def check_values(value: Any, where: tuple[str | int, ...]) -> None:
    """Raise ValueError naming the field of the first NaN / infinite number or lone-surrogate string
    (in keys too) anywhere in a parsed JSON body."""
    field = ".".join(str(p) for p in where) or "body"
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{field} = {value}: numbers must be finite (NaN and Infinity are not JSON)")
    if isinstance(value, str):
        check_text(value, field)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(str(key), f"a key of {field}")
            check_values(item, (*where, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_values(item, (*where, i))


def api_router(service: Service) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "default": service.answer.mode,
                "data": [{"id": name, "object": "model", "created": 0, "owned_by": "footnotes"}
                         for name in service.modes()]}

    @router.post("/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        question, history = oa.question_and_history([m.model_dump() for m in body.messages])
        overrides = dict(body.settings)
        if body.k is not None:
            overrides["k"] = body.k
        max_tokens = body.max_completion_tokens or body.max_tokens
        if max_tokens is not None:
            overrides["max_new_tokens"] = max_tokens
        settings = service.settings(body.model or None, overrides)  # an unknown mode or setting is a 400 now
        await run_in_threadpool(service.engine, settings)  # the mode is built (once) before anything is queued
        stream = service.stream(question, history, settings.mode, overrides)
        c = oa.Completion.new(settings.mode)
        max_new_tokens = settings.shared.max_new_tokens
        try:
            if not body.stream:
                answer = await _last(stream, request)
                return oa.completion(answer, c, max_new_tokens)
            first = await _next(stream)  # errors before the first token still get their status code
        except BaseException:
            stream.cancel()  # an error, or a client that hung up while waiting in line
            raise
        return StreamingResponse(_events(first, stream, c, max_new_tokens), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

    @router.post("/search")
    def search(body: SearchRequest) -> list[dict[str, Any]]:
        types = tuple(t if t.startswith(".") else f".{t}" for t in body.types)
        hits = service.search(body.query, body.k, Filters(body.prefix, types))
        return [h.to_json() for h in hits]

    @router.get("/documents")
    def documents() -> dict[str, Any]:
        return {"documents": [d.to_json() for d in service.documents()], "summary": service.status().to_json()}

    @router.post("/documents", status_code=201)
    async def upload(request: Request) -> dict[str, Any]:
        if "content-length" not in request.headers:  # else the form parser spools any amount to disk first
            raise _refused("send the upload with a Content-Length header (chunked uploads are not accepted)", 411)
        try:
            length = int(request.headers["content-length"])
        except ValueError:
            raise _refused("the Content-Length header is not a number", 400) from None
        limit = service.max_upload_bytes * MAX_UPLOAD_FILES + FORM_OVERHEAD
        if length > limit:
            raise _refused(f"the upload is {length:,} bytes, over the limit of {limit:,} bytes ({MAX_UPLOAD_FILES} "
                           f"files of at most {service.max_upload_bytes:,} bytes each); send fewer or smaller files "
                           "(or raise server.max_upload_bytes in config.toml)", 413)
        form = await request.form(max_files=MAX_UPLOAD_FILES, max_fields=10)
        files = [f for _, f in form.multi_items() if hasattr(f, "filename") and hasattr(f, "file")]
        if not files:
            raise _refused('send the files as multipart/form-data, field name "file"', 400)
        saved = []
        for f in files:
            result = await run_in_threadpool(service.upload, f.filename or "", _blocks(f.file))
            saved.append({"source": result.doc_id, "bytes": result.size, "replaced": result.replaced})
        return {"saved": saved, "note": "the watcher indexes new files within seconds; see GET /v1/documents"}

    @router.delete("/documents/{doc_id:path}")
    def delete(doc_id: str) -> dict[str, Any]:
        report = service.delete(doc_id)
        return {"removed": list(report.removed), "source": doc_id}

    @router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    def not_found(rest: str, request: Request) -> None:
        path = request.url.path
        allowed = sorted({m for r in router.routes if getattr(r, "name", "") != "not_found"
                          and r.path_regex.match(path) for m in r.methods})
        if allowed:
            raise StarletteHTTPException(405, f"{request.method} is not allowed on {path}; use {', '.join(allowed)}",
                                         headers={"allow": ", ".join(allowed)})
        raise StarletteHTTPException(404, f"no API route /v1/{rest}; routes: GET /v1/models, POST /v1/chat/completions, "
                                          "POST /v1/search, GET/POST /v1/documents, DELETE /v1/documents/{source}")

    return router


def _refused(message: str, status: int) -> DocumentError:
    from .uploads import UploadRefused

    return UploadRefused(message, status)


def _blocks(fh: Any, size: int = 1 << 20) -> Iterator[bytes]:
    fh.seek(0)
    while block := fh.read(size):
        yield block


async def _next(stream: Any) -> Any:
    """The next item of a generation stream without holding a worker thread, or _DONE."""
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return _DONE


async def _last(stream: Any, request: Request) -> Answer:
    """The Answer at the end of a stream; a client that hung up meanwhile cancels the generation at the
    next token (as a streaming client does), so it does not hold the queue to the end."""
    last = None
    async for last in stream:
        if await request.is_disconnected():
            stream.cancel()
            raise ClientDisconnected()
    if not isinstance(last, Answer):
        raise RuntimeError("the answer mode ended without an Answer")
    return last


class ClientDisconnected(Exception):
    """The client of a non-streaming chat went away before its answer was ready."""


async def _events(first: Any, stream: Any, c: oa.Completion, max_new_tokens: int) -> AsyncIterator[bytes]:
    """The SSE body: a role chunk, a chunk per token (with its provenance), a last chunk with the
    whole Answer, then ``[DONE]``. An error after the first token becomes an error event."""
    try:
        yield oa.sse(oa.first_chunk(c))
        item = first
        while item is not _DONE:
            if isinstance(item, Answer):
                yield oa.sse(oa.last_chunk(item, c, max_new_tokens))
                break
            yield oa.sse(oa.token_chunk(item, c))
            item = await _next(stream)
        yield oa.sse("[DONE]")
    except (FootnotesError, ValueError) as exc:
        status, kind, code = classify(exc)
        yield oa.sse(oa.error_body(str(exc), kind, code))
        yield oa.sse("[DONE]")
    except Exception:  # a bug: the client still gets a clean end of stream
        log.exception("answer stream failed")
        yield oa.sse(oa.error_body("internal error while answering; see the server log", "server_error"))
        yield oa.sse("[DONE]")
    finally:
        stream.cancel()  # a client that hung up frees the generation queue after the current token


def classify(exc: Exception) -> tuple[int, str, str]:
    """(HTTP status, OpenAI error type, code) of one of our errors."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status, "invalid_request_error" if status < 500 else "server_error", _code(exc)
    if isinstance(exc, UnknownNameError):
        return 400, "invalid_request_error", "unknown_name"
    if isinstance(exc, (ConfigError, ValueError)):
        return 400, "invalid_request_error", "invalid_value"
    if isinstance(exc, (IndexUnusableError, NotReadyError)):
        return 503, "server_error", "index_unavailable"
    if isinstance(exc, DocumentError):
        return 400, "invalid_request_error", "document_error"
    return 500, "server_error", "error"


def _code(exc: Exception) -> str:
    name = type(exc).__name__
    return "".join(f"_{ch.lower()}" if ch.isupper() else ch for ch in name).lstrip("_")


def install_error_handlers(app: FastAPI) -> None:
    async def footnotes_error(request: Request, exc: Exception) -> JSONResponse:
        status, kind, code = classify(exc)
        return JSONResponse(oa.error_body(str(exc), kind, code), status_code=status)

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
                             for e in exc.errors())
        return JSONResponse(oa.error_body(f"invalid request: {problems}", "invalid_request_error", "invalid_body"),
                            status_code=400)

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(oa.error_body(str(exc.detail), kind, str(exc.status_code)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    async def client_gone(request: Request, exc: ClientDisconnected) -> Response:
        return Response(status_code=499)  # nobody reads it; nginx's code for "client closed the request"

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(oa.error_body("internal error; see the server log", "server_error", "internal_error"),
                            status_code=500)

    app.add_exception_handler(ClientDisconnected, client_gone)
    app.add_exception_handler(Exception, unexpected_error)
    app.add_exception_handler(FootnotesError, footnotes_error)
    app.add_exception_handler(ValueError, footnotes_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
