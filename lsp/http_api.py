"""An HTTP front door speaking the OpenAI and Ollama dialects, for tools that only know those
(Open WebUI, Continue, CodeCompanion ...). It runs in the daemon's own anyio task group, on the
same resident engine as the LSP and the Unix socket: nothing is loaded twice.

Routes (see docs/http.md):
  OpenAI: GET /v1/models, POST /v1/chat/completions, POST /v1/completions
  Ollama: GET /api/version, GET /api/tags, POST /api/chat, POST /api/generate, POST /api/show

Bad input is answered 4xx with a JSON error in the dialect of the route, never a traceback.
A client that goes away mid-stream cancels its engine job at the next token.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import socket
import time
import uuid
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Awaitable, Callable, Literal
from urllib.parse import urlsplit

import anyio
import anyio.abc
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from exlsp.plugins.api import ChatMessage, CompletionQuery
from exlsp.runtime import Completion, Delta, ExlspError, GenerationRequest, Priority, SamplingParams

log = logging.getLogger(__name__)

ALIAS = "exlsp"
OLLAMA_COMPAT_VERSION = "0.6.0"  # what /api/version reports: clients gate features on it
Dialect = Literal["openai", "ollama"]


# ---- errors -----------------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


def error_response(dialect: Dialect, status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    if dialect == "ollama":
        return JSONResponse({"error": message}, status_code=status)
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": None}}, status_code=status
    )


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token: the model would be open to anyone."""
    if token:
        return
    name = host.strip("[]")
    if name == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ExlspError(
            f"refusing to serve HTTP on {host} without a token: anyone who can reach it could use the "
            "model. Bind to 127.0.0.1, or set a token with --http-token (clients send it as "
            "'Authorization: Bearer TOKEN')."
        )


# ---- request bodies ---------------------------------------------------------------------------------


class OAMessage(msgspec.Struct, kw_only=True):
    role: str
    content: str | list[dict[str, Any]] | None = None


class OAChatRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    messages: list[OAMessage]
    stream: bool = False
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream_options: dict[str, Any] | None = None


class OACompletionRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    prompt: str | list[str]
    suffix: str | None = None
    stream: bool = False
    max_tokens: int | None = 16
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream_options: dict[str, Any] | None = None


class OllamaOptions(msgspec.Struct, kw_only=True):
    num_predict: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] | None = None


class OllamaMessage(msgspec.Struct, kw_only=True):
    role: str
    content: str = ""


class OllamaChatRequest(msgspec.Struct, kw_only=True):
    model: str
    messages: list[OllamaMessage] = []
    stream: bool = True
    options: OllamaOptions | None = None


class OllamaGenerateRequest(msgspec.Struct, kw_only=True):
    model: str
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    raw: bool = False
    stream: bool = True
    options: OllamaOptions | None = None


class OllamaShowRequest(msgspec.Struct, kw_only=True):
    model: str | None = None
    name: str | None = None


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise ApiError(400, "only text content parts are supported")
        parts.append(part["text"])
    return "".join(parts)


def _stops(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else [s for s in stop if s]


def _finish(final: Completion) -> str:
    return "length" if final.stop_reason in ("length", "time") else "stop"


def _ns(ms: float) -> int:
    return int(ms * 1_000_000)


# ---- the app -------------------------------------------------------------------------------------


class HttpApi:
    def __init__(self, assistant: Any, *, max_body_bytes: int) -> None:
        self.assistant = assistant
        self.max_body_bytes = max_body_bytes

    @property
    def engine(self) -> Any:
        return self.assistant.engine

    @property
    def model_name(self) -> str:
        return self.assistant.model.name

    @property
    def lane_group(self) -> str:
        """HTTP clients get lanes of their own where the daemon made them (`--http` does): shared
        with the user's chat, reused-token counts and timing would let any HTTP client probe for
        prefixes of the user's own prompts (docs/security.md)."""
        lanes = getattr(self.engine, "lanes", None)
        groups = {lane.group for lane in getattr(lanes, "lanes", ())}
        return "http" if "http" in groups else "chat"

    @property
    def n_ctx(self) -> int:
        return self.assistant.model.n_ctx

    # -- helpers --

    def check_model(self, name: str | None) -> None:
        if not name:
            return
        base = name[: -len(":latest")] if name.endswith(":latest") else name
        if base not in (self.model_name, ALIAS):
            raise ApiError(404, f"model '{name}' not found; this server has '{self.model_name}' (alias '{ALIAS}')", "not_found_error")

    def check_max_tokens(self, max_tokens: int | None) -> None:
        if max_tokens is None:
            return
        if max_tokens < 1:
            raise ApiError(400, f"max_tokens must be at least 1, got {max_tokens}")
        if max_tokens >= self.n_ctx:
            raise ApiError(400, f"max_tokens {max_tokens} is beyond the model's context of {self.n_ctx} tokens")

    async def body(self, request: Request, type_: type) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            raise ApiError(413, f"request body over {self.max_body_bytes} bytes")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > self.max_body_bytes:
                raise ApiError(413, f"request body over {self.max_body_bytes} bytes")
        try:
            return msgspec.json.decode(bytes(data), type=type_)
        except msgspec.ValidationError as exc:
            raise ApiError(400, f"invalid request: {exc}") from None
        except msgspec.DecodeError as exc:
            raise ApiError(400, f"invalid JSON: {exc}") from None
        except RecursionError:  # msgspec's own limit on nesting (found by tests/fuzz)
            raise ApiError(400, "invalid JSON: nested too deeply") from None
        except UnicodeError:  # invalid UTF-8 inside a string
            raise ApiError(400, "invalid JSON: the body is not valid UTF-8") from None

    def chat_prompt(self, messages: list[ChatMessage]) -> str:
        a = self.assistant
        _, fmt = a._best(a.plugins.chat_formats(), a._fallback_chat)
        # Chat UIs paste files into messages: a file's "<|im_end|>" must not end the turn and forge
        # another one. The same defusing as the socket's and the LSP's chat.
        messages = [ChatMessage(m.role, a._defuse(m.content)) for m in messages]
        return a._render_chat(fmt, messages)

    def chat_request(
        self, prompt: str, *, max_tokens: int | None, temperature: float | None, top_p: float | None,
        top_k: int | None = None, seed: int | None, stop: list[str],
    ) -> GenerationRequest:
        return GenerationRequest(
            prompt=prompt,
            max_tokens=max_tokens or self.n_ctx // 2,
            priority=Priority.CHAT,
            lane_group=self.lane_group,
            sampling=SamplingParams(
                temperature=temperature if temperature is not None else 0.0,
                top_p=top_p if top_p is not None else 1.0,
                top_k=top_k or 0,
                seed=seed,
            ),
            stop=stop,
            add_bos=False,
        )

    async def fim(self, query: CompletionQuery) -> Any:
        """Fill in the middle through the editor pipeline (formats, post-processing), but without
        the context of the user's recently edited files and on the API's own lanes, below the
        user's editors: an HTTP client may be any local user (docs/security.md)."""
        return await self.assistant.complete(query, lane_group=self.lane_group, priority=Priority.SHELL, use_context=False)

    async def events(self, request: GenerationRequest) -> AsyncIterator[Delta | Completion]:
        """The engine's events; leaving early (client gone, task cancelled) cancels the job."""
        stream = await self.engine.generate(request)
        try:
            async for event in stream:
                yield event
        finally:
            if stream.final is None:
                stream.cancel()

    async def run(self, request: GenerationRequest) -> Completion:
        final: Completion | None = None
        async with contextlib.aclosing(self.events(request)) as events:
            async for event in events:
                if isinstance(event, Completion):
                    final = event
        assert final is not None
        if final.stop_reason == "error":
            raise ApiError(500, f"generation failed: {final.error or 'unknown error'}", "server_error")
        return final

    # -- OpenAI --

    def usage(self, final: Completion | None) -> dict[str, int]:
        p = final.prompt_tokens if final else 0
        c = final.generated_tokens if final else 0
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
                "exlsp_reused_tokens": final.reused_tokens if final else 0}

    async def oa_models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": self.model_name, "object": "model", "created": int(self.assistant.started), "owned_by": "exlsp"}
        ]})

    async def oa_chat(self, request: Request) -> Response:
        body: OAChatRequest = await self.body(request, OAChatRequest)
        self.check_model(body.model)
        if body.n != 1:
            raise ApiError(400, "only n=1 is supported")
        if not body.messages:
            raise ApiError(400, "messages must not be empty")
        max_tokens = body.max_completion_tokens or body.max_tokens
        self.check_max_tokens(max_tokens)
        prompt = self.chat_prompt([ChatMessage(m.role, _text(m.content)) for m in body.messages])
        gen = self.chat_request(prompt, max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                                seed=body.seed, stop=_stops(body.stop))
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not body.stream:
            final = await self.run(gen)
            return JSONResponse({
                "id": ident, "object": "chat.completion", "created": created, "model": self.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": final.text},
                             "finish_reason": _finish(final)}],
                "usage": self.usage(final),
            })
        include_usage = bool((body.stream_options or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            return _sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": self.model_name,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        async def sse() -> AsyncIterator[bytes]:
            yield chunk({"role": "assistant", "content": ""}, None)
            async with contextlib.aclosing(self.events(gen)) as events:
                async for event in events:
                    if isinstance(event, Delta):
                        if event.text:
                            yield chunk({"content": event.text}, None)
                    elif event.stop_reason == "error":
                        yield _sse({"error": {"message": f"generation failed: {event.error}", "type": "server_error"}})
                    else:
                        yield chunk({}, _finish(event))
                        if include_usage:
                            yield _sse({"id": ident, "object": "chat.completion.chunk", "created": created,
                                        "model": self.model_name, "choices": [], "usage": self.usage(event)})
            yield b"data: [DONE]\n\n"

        return _Stream(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def oa_completions(self, request: Request) -> Response:
        body: OACompletionRequest = await self.body(request, OACompletionRequest)
        self.check_model(body.model)
        if body.n != 1:
            raise ApiError(400, "only n=1 is supported")
        if isinstance(body.prompt, list):
            if len(body.prompt) != 1:
                raise ApiError(400, "prompt must be one string")
            prompt = body.prompt[0]
        else:
            prompt = body.prompt
        self.check_max_tokens(body.max_tokens)
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        async def text_and_final(on_delta: Callable[[str], Awaitable[None]] | None) -> tuple[str, Completion]:
            if body.suffix is not None:  # fill in the middle: the editor completion pipeline
                answer = await self.fim(CompletionQuery(prefix=prompt, suffix=body.suffix, max_tokens=body.max_tokens or 64))
                if answer.stats is None:
                    raise ApiError(500, "completion produced no result", "server_error")
                return answer.text, answer.stats
            final = await self.run(GenerationRequest(
                prompt=prompt, max_tokens=body.max_tokens or 16, priority=Priority.CHAT, lane_group=self.lane_group,
                sampling=SamplingParams(temperature=body.temperature or 0.0,
                                        top_p=body.top_p if body.top_p is not None else 1.0, seed=body.seed),
                stop=_stops(body.stop),
            ))
            return final.text, final

        def payload(text: str, finish: str | None) -> dict[str, Any]:
            return {"id": ident, "object": "text_completion", "created": created, "model": self.model_name,
                    "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}

        if not body.stream:
            text, final = await text_and_final(None)
            return JSONResponse({**payload(text, _finish(final)), "usage": self.usage(final)})

        include_usage = bool((body.stream_options or {}).get("include_usage"))

        async def sse() -> AsyncIterator[bytes]:
            if body.suffix is not None:  # post-processed as a whole: one chunk
                text, final = await text_and_final(None)
                if text:
                    yield _sse(payload(text, None))
            else:
                gen = GenerationRequest(
                    prompt=prompt, max_tokens=body.max_tokens or 16, priority=Priority.CHAT, lane_group=self.lane_group,
                    sampling=SamplingParams(temperature=body.temperature or 0.0,
                                            top_p=body.top_p if body.top_p is not None else 1.0, seed=body.seed),
                    stop=_stops(body.stop),
                )
                final = None
                async with contextlib.aclosing(self.events(gen)) as events:
                    async for event in events:
                        if isinstance(event, Delta):
                            if event.text:
                                yield _sse(payload(event.text, None))
                        else:
                            final = event
                assert final is not None
            yield _sse(payload("", _finish(final)))
            if include_usage:
                yield _sse({**payload("", None), "choices": [], "usage": self.usage(final)})
            yield b"data: [DONE]\n\n"

        return _Stream(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    # -- Ollama --

    def ollama_name(self) -> str:
        return f"{self.model_name}:latest"

    def ollama_details(self) -> dict[str, Any]:
        return {"format": "gguf", "family": "", "families": None, "parameter_size": "", "quantization_level": ""}

    def ollama_final(self, final: Completion) -> dict[str, Any]:
        return {
            "done": True,
            "done_reason": _finish(final),
            "total_duration": _ns(final.total_ms),
            "load_duration": 0,  # the model is resident
            "prompt_eval_count": final.prompt_tokens,
            "prompt_eval_duration": _ns(final.prefill_ms),
            "eval_count": final.generated_tokens,
            "eval_duration": _ns(final.decode_ms),
        }

    async def ollama_version(self, request: Request) -> Response:
        from exlsp import __version__

        return JSONResponse({"version": OLLAMA_COMPAT_VERSION, "exlsp": __version__})

    async def ollama_tags(self, request: Request) -> Response:
        name = self.ollama_name()
        modified = datetime.fromtimestamp(self.assistant.started, timezone.utc).isoformat()
        return JSONResponse({"models": [
            {"name": name, "model": name, "modified_at": modified, "size": 0, "digest": "",
             "details": self.ollama_details()}
        ]})

    async def ollama_show(self, request: Request) -> Response:
        body: OllamaShowRequest = await self.body(request, OllamaShowRequest)
        name = body.model or body.name
        if not name:
            raise ApiError(400, "model is required")
        self.check_model(name)
        return JSONResponse({
            "modelfile": "", "parameters": "", "template": self.assistant.model.chat_template or "",
            "details": self.ollama_details(),
            "model_info": {"general.name": self.model_name, "exlsp.context_length": self.n_ctx},
            "capabilities": ["completion", "insert"],
        })

    def ollama_request(self, prompt: str, options: OllamaOptions | None) -> GenerationRequest:
        o = options or OllamaOptions()
        if o.num_predict is not None and o.num_predict >= 0:  # Ollama: -1 means "no limit"
            self.check_max_tokens(o.num_predict)
        return self.chat_request(prompt, max_tokens=o.num_predict if (o.num_predict or 0) > 0 else None,
                                 temperature=o.temperature, top_p=o.top_p, top_k=o.top_k, seed=o.seed,
                                 stop=list(o.stop or []))

    def ollama_response(
        self, gen: GenerationRequest | None, stream: bool, piece: Callable[[str], dict[str, Any]],
        fim: Callable[[], Awaitable[tuple[str, Completion]]] | None = None,
    ) -> Awaitable[Response] | Response:
        def head() -> dict[str, Any]:
            return {"model": self.ollama_name(), "created_at": datetime.now(timezone.utc).isoformat()}

        async def whole() -> Response:
            if fim is not None:
                text, final = await fim()
            else:
                final = await self.run(gen)
                text = final.text
            return JSONResponse({**head(), **piece(text), **self.ollama_final(final)})

        if not stream:
            return whole()

        async def ndjson() -> AsyncIterator[bytes]:
            if fim is not None:
                text, final = await fim()
                if text:
                    yield _line({**head(), **piece(text), "done": False})
                yield _line({**head(), **piece(""), **self.ollama_final(final)})
                return
            async with contextlib.aclosing(self.events(gen)) as events:
                async for event in events:
                    if isinstance(event, Delta):
                        if event.text:
                            yield _line({**head(), **piece(event.text), "done": False})
                    elif event.stop_reason == "error":
                        yield _line({"error": f"generation failed: {event.error}"})
                    else:
                        yield _line({**head(), **piece(""), **self.ollama_final(event)})

        return _Stream(ndjson(), media_type="application/x-ndjson")

    async def ollama_chat(self, request: Request) -> Response:
        body: OllamaChatRequest = await self.body(request, OllamaChatRequest)
        self.check_model(body.model)
        if not body.messages:  # Ollama: an empty chat loads the model and answers done
            return JSONResponse({"model": self.ollama_name(), "created_at": datetime.now(timezone.utc).isoformat(),
                                 "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "load"})
        prompt = self.chat_prompt([ChatMessage(m.role, m.content) for m in body.messages])
        gen = self.ollama_request(prompt, body.options)
        result = self.ollama_response(gen, body.stream, lambda t: {"message": {"role": "assistant", "content": t}})
        return await result if not isinstance(result, Response) else result

    async def ollama_generate(self, request: Request) -> Response:
        body: OllamaGenerateRequest = await self.body(request, OllamaGenerateRequest)
        self.check_model(body.model)
        piece = lambda t: {"response": t}  # noqa: E731
        if body.suffix is not None:
            o = body.options or OllamaOptions()
            if o.num_predict is not None and o.num_predict > 0:
                self.check_max_tokens(o.num_predict)

            async def fim() -> tuple[str, Completion]:
                answer = await self.fim(CompletionQuery(
                    prefix=body.prompt, suffix=body.suffix or "",
                    max_tokens=o.num_predict if (o.num_predict or 0) > 0 else 64,
                ))
                if answer.stats is None:
                    raise ApiError(500, "completion produced no result", "server_error")
                return answer.text, answer.stats

            result = self.ollama_response(None, body.stream, piece, fim)
        else:
            if not body.prompt:  # Ollama: an empty prompt loads the model and answers done
                return JSONResponse({"model": self.ollama_name(), "created_at": datetime.now(timezone.utc).isoformat(),
                                     "response": "", "done": True, "done_reason": "load"})
            if body.raw:
                prompt = body.prompt
            else:
                messages = ([ChatMessage("system", body.system)] if body.system else []) + [ChatMessage("user", body.prompt)]
                prompt = self.chat_prompt(messages)
            gen = self.ollama_request(prompt, body.options)
            if body.raw:
                gen.add_bos = True
            result = self.ollama_response(gen, body.stream, piece)
        return await result if not isinstance(result, Response) else result


class _Stream(StreamingResponse):
    """A streamed answer whose body generator is closed however the response ends. A client that
    leaves while the generator waits at a ``yield`` (its chunk being sent) would otherwise leave
    it, and the engine job behind it, running until the generator is garbage-collected."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()


def _sse(obj: Any) -> bytes:
    return b"data: " + msgspec.json.encode(obj) + b"\n\n"


def _line(obj: Any) -> bytes:
    return msgspec.json.encode(obj) + b"\n"


def _route(dialect: Dialect, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(dialect, exc.status, exc.message, exc.kind)
        except ExlspError as exc:  # e.g. the engine is shutting down
            return error_response(dialect, 503, str(exc), "server_error")
        except Exception:
            log.exception("exlsp http: %s %s failed", request.method, request.url.path)
            return error_response(dialect, 500, "internal error (see the daemon's log)", "server_error")

    return endpoint


def _names_this_machine(host: str | None) -> bool:
    """Whether a host from a Host or Origin header is this machine: localhost, ``*.localhost``
    (browsers resolve those to loopback themselves) or a loopback address."""
    name = (host or "").strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _hostname(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:  # e.g. an unclosed "[::1"
        return None


class _LoopbackOnly:
    """Pure ASGI middleware for the API without a token (served on loopback only): web pages stay
    out. A page the user visits can send requests to 127.0.0.1, and through DNS rebinding read the
    answers under its own host name (Ollama's CVE-2024-28224): a Host that does not name this
    machine, or an Origin of another site, is answered 403 before anything runs."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            host = origin = None
            for key, value in scope.get("headers", []):
                if key == b"host":
                    host = value.decode("latin-1")
                elif key == b"origin":
                    origin = value.decode("latin-1")
            problem = ""
            if not _names_this_machine(_hostname(f"//{host or ''}")):
                problem = f"Host {host!r} is not this machine"
            elif origin is not None and not _names_this_machine(_hostname(origin)):
                problem = f"requests from the web page {origin!r} are refused"
            if problem:
                dialect: Dialect = "ollama" if scope.get("path", "").startswith("/api/") else "openai"
                message = f"{problem}; without --http-token exlsp serves this machine's own clients only"
                await error_response(dialect, 403, message, "permission_error")(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _BearerAuth:
    """Pure ASGI middleware: every HTTP request must carry ``Authorization: Bearer TOKEN``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            got = b""
            for key, value in scope.get("headers", []):
                if key == b"authorization":
                    got = value
            scheme, _, supplied = got.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(supplied.strip(), self.token):
                dialect: Dialect = "ollama" if scope.get("path", "").startswith("/api/") else "openai"
                response = error_response(dialect, 401, "missing or wrong bearer token", "authentication_error")
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def make_app(assistant: Any, *, token: str | None, max_body_bytes: int = 1_000_000) -> Any:
    api = HttpApi(assistant, max_body_bytes=max_body_bytes)
    routes = [
        Route("/v1/models", _route("openai", api.oa_models), methods=["GET"]),
        Route("/v1/chat/completions", _route("openai", api.oa_chat), methods=["POST"]),
        Route("/v1/completions", _route("openai", api.oa_completions), methods=["POST"]),
        Route("/api/version", _route("ollama", api.ollama_version), methods=["GET"]),
        Route("/api/tags", _route("ollama", api.ollama_tags), methods=["GET"]),
        Route("/api/show", _route("ollama", api.ollama_show), methods=["POST"]),
        Route("/api/chat", _route("ollama", api.ollama_chat), methods=["POST"]),
        Route("/api/generate", _route("ollama", api.ollama_generate), methods=["POST"]),
    ]
    app: Any = Starlette(routes=routes)
    app.state.api = api
    return _BearerAuth(app, token) if token else app


# ---- serving ---------------------------------------------------------------------------------------


async def serve_http(
    app: Any, host: str, port: int, *, token: str | None,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` with uvicorn in the caller's task group until cancelled. ``task_status``
    gets the port actually bound (useful with port 0). Raises ``ExlspError`` when the address
    cannot be had or is not loopback without a token. Without a token, requests whose Host or
    Origin is not this machine are refused (``_LoopbackOnly``)."""
    import uvicorn

    check_bind(host, token)
    if not token:
        app = _LoopbackOnly(app)
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: without, the first body chunk after the headers waited
        # for the client's delayed ACK (Nagle) - a steady +40 ms on every streamed first token.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ExlspError(f"cannot serve HTTP on {host}:{port}: {exc.strerror or exc}") from None
    bound = sock.getsockname()[1]

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # the daemon owns SIGINT/SIGTERM
            yield

    config = uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False, ws="none", timeout_graceful_shutdown=2,
    )
    server = _Server(config)
    finished = anyio.Event()

    async def run() -> None:
        try:
            with anyio.CancelScope(shield=True):  # shut down through should_exit, not cut off
                await server.serve(sockets=[sock])
        finally:
            finished.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            while not server.started:
                if finished.is_set():
                    raise ExlspError(f"the HTTP server on {host}:{bound} did not start")
                await anyio.sleep(0.01)
            log.info("exlsp: HTTP API on http://%s:%d", host, bound)
            task_status.started(bound)
            try:
                await anyio.sleep_forever()
            finally:
                server.should_exit = True
    finally:
        sock.close()
