"""The assistant services: complete / suggest / chat, built from plugins, run on the engine.

Each call is context -> prompt -> engine -> post-process. The front doors (LSP, Unix socket)
translate their messages into the queries of ``api.py`` and call these methods; they never build
prompts themselves. Cancelling the task that awaits a call cancels its generation at the next
token.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

import anyio
import msgspec

from exlsp.runtime import Completion, Delta, Engine, GenerationRequest, Priority, SamplingParams, model_loads

from .api import (
    Answer,
    ChatMessage,
    ChatQuery,
    CompletionQuery,
    ContextChunk,
    ModelInfo,
    OnDelta,
    PostContext,
    Query,
    ShellQuery,
    Suggestion,
)
from .builtin.chat_templates import ChatMLFormat
from .builtin.fim import PrefixOnlyFormat
from .builtin.layout import PromptLayout
from .builtin.postprocess import decide_multiline
from .manager import PluginFailed, PluginManager, Registered
from .shell_risk import classify, sanitize

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class AssistantSettings:
    completion_budget: int = 1024  # prompt tokens for inline completion
    completion_max_tokens: int = 64
    t_max_predict_ms: float = 1500.0  # then stop at the next line end
    shell_max_tokens: int = 48
    chat_max_tokens: int = 512
    reuse_cache: bool = True  # benchmarks switch KV reuse off to measure what it saves


@dataclass
class Counters:
    completions: int = 0
    suggestions: int = 0
    chats: int = 0
    accepted: int = 0
    accepted_by_kind: dict[str, int] = field(default_factory=dict)


CLOSERS = frozenset("}])") | {"end", "fi", "done", "esac"}


def scope_stop(prefix: str) -> Callable[[str], int | None]:
    """Stop a multi-line completion where it leaves the cursor's block: at a line indented less
    than the cursor's line (a line of closing brackets there still belongs to the block). Saves
    generating a whole next function only for the post-processors to cut it."""
    line = prefix.rsplit("\n", 1)[-1]
    indent = len(line) - len(line.lstrip(" \t"))

    def check(text: str) -> int | None:
        start = text.find("\n") + 1
        while 0 < start < len(text):
            end = text.find("\n", start)
            current = text[start:] if end < 0 else text[start:end]
            body = current.lstrip(" \t")
            if body:
                if len(current) - len(body) < indent:
                    if body.strip() in CLOSERS or set(body.strip()) <= set("}])"):
                        return None if end < 0 else end + 1
                    return start
            if end < 0:
                return None
            start = end + 1
        return None

    return check


async def _deliver(on_delta: OnDelta | None, text: str) -> None:
    if on_delta is None or not text:
        return
    result = on_delta(text)
    if inspect.isawaitable(result):
        await result


class Assistant:
    def __init__(
        self, engine: Engine, plugins: PluginManager, settings: AssistantSettings | None = None
    ) -> None:
        self.engine = engine
        self.plugins = plugins
        self.settings = settings or AssistantSettings()
        self.counters = Counters()
        self.started = time.time()
        self.last_completion: Completion | None = None  # the engine's record of the latest completion
        tok = engine.tokenizer

        # The layout counts a window's tokens and the format then encodes the same text: tokenize
        # once per keystroke, not twice (a few ms on a 2-core machine for a 1k-token window).
        @functools.lru_cache(maxsize=64)
        def encode(text: str) -> tuple[int, ...]:
            return tuple(tok.encode(text, special=False))

        self.model = ModelInfo(
            name=engine.backend.model_name,
            special=tok.special,
            chat_template=getattr(engine.backend, "chat_template", None),
            n_ctx=engine.backend.n_ctx,
            count_tokens=lambda text: len(encode(text)),
            encode=lambda text: list(encode(text)),
        )
        self.layout = PromptLayout()
        self._fallback_prompt = PrefixOnlyFormat()
        self._fallback_chat = ChatMLFormat()
        sp = tok.special
        # FIM structure tokens never belong in a completion: they end it (they decode to "").
        self._structural_stops = [
            t
            for t in (sp.fim_pad, sp.fim_sep, sp.fim_repo, sp.fim_prefix, sp.fim_suffix, sp.fim_middle)
            if t is not None
        ]
        self._special_spellings = sorted(
            (t for t in sp.by_text if len(t) > 2 and t[0] in "<[" and t[-1] in ">]"), key=len, reverse=True
        )
        self._configure_layout()
        plugins.on_change.append(self._configure_layout)

    def _configure_layout(self) -> None:
        """The layout is the fim plugin's setting; re-read it whenever plugins or settings change."""
        try:
            self.layout.configure(self.plugins.settings_for("fim"))
        except Exception:
            log.exception("could not apply the fim plugin's layout settings")

    # ---- plugin plumbing ------------------------------------------------------------------------

    def _best(self, candidates: Sequence[Registered[T]], fallback: T) -> tuple[str, T]:
        """Highest ``score`` wins; on a tie the one registered last (user plugins come last)."""
        best: tuple[int, str, T] | None = None
        for reg in candidates:
            try:
                score = self.plugins.guarded_sync(reg, "score", self.model, expect=int)
            except PluginFailed:
                continue
            if score > 0 and (best is None or score >= best[0]):
                best = (score, reg.plugin, reg.obj)
        return (best[1], best[2]) if best else ("builtin-fallback", fallback)

    def _format_call(self, candidates: Sequence[Registered[Any]], obj: Any, method: str, *args: Any) -> Any:
        """``obj.<method>(*args)`` for a prompt or chat format: bounded by the hook budget when it
        is a plugin's (a hang is a strike, ``PluginFailed``); an exception is raised as is, and
        the caller falls back for this request without blocking the format."""
        reg = next((r for r in candidates if r.obj is obj), None)
        if reg is None:  # the built-in fallback: our own code
            return getattr(obj, method)(*args)
        return self.plugins.guarded_sync(reg, method, *args, block_on_error=False)

    async def _context(self, kind: str, query: Query) -> list[ContextChunk]:
        chunks: list[ContextChunk] = []

        async def one(reg: Registered[Any]) -> None:
            timeout = getattr(reg.obj, "timeout_s", None)
            try:
                got = await self.plugins.guarded(reg, "provide", query, self.model, timeout_s=timeout)
            except PluginFailed:
                return
            chunks.extend(c for c in (got or []) if isinstance(c, ContextChunk))

        async with anyio.create_task_group() as tg:
            for reg in self.plugins.context_providers(kind):
                tg.start_soon(one, reg)
        return chunks

    def _postprocess(self, kind: str, text: str, ctx: PostContext) -> str:
        for reg in self.plugins.postprocessors(kind):
            try:
                text = self.plugins.guarded_sync(reg, "process", text, ctx, expect=str)
            except PluginFailed:
                continue
            if not text:
                break
        return text

    async def _generate(self, request: GenerationRequest, on_delta: OnDelta | None) -> Completion:
        stream = await self.engine.generate(request)
        try:
            async for event in stream:
                if isinstance(event, Delta):
                    await _deliver(on_delta, event.text)
        finally:
            if stream.final is None:  # cancelled while delivering: stop the engine job too
                stream.cancel()
        assert stream.final is not None
        return stream.final

    # ---- services ---------------------------------------------------------------------------------

    async def complete(
        self,
        query: CompletionQuery,
        on_delta: OnDelta | None = None,
        *,
        supersede_key: str | None = None,
        lane_group: str = "completion",
        priority: Priority = Priority.INLINE,
        use_context: bool = True,
    ) -> Answer:
        """A code completion. The HTTP API calls it with ``use_context=False`` and lanes of its own:
        context providers read the user's recently edited files, and an HTTP client (any local user,
        without a token) must neither get them in its prompt nor probe the editors' KV cache."""
        self.counters.completions += 1
        s = self.settings
        multiline = decide_multiline(query.prefix, query.suffix)
        max_tokens = max(1, min(query.max_tokens or s.completion_max_tokens, self.model.n_ctx // 4))
        chunks = await self._context("completion", query) if use_context else []
        budget = max(64, min(query.budget_tokens or s.completion_budget, self.model.n_ctx - max_tokens - 8))
        fmt_name, fmt = self._best(self.plugins.prompt_formats(), self._fallback_prompt)
        # A format that cannot see the suffix must not spend budget on it.
        suffix = query.suffix if getattr(fmt, "uses_suffix", True) else ""
        window = self.layout.window(query.path or "untitled", query.prefix, suffix, chunks, budget, self.model)
        try:
            prompt = self._format_call(
                self.plugins.prompt_formats(), fmt, "build", self.model, window.prefix, window.suffix, window.chunks, query
            )
        except Exception as exc:  # a broken or hung format plugin must not cost the user the completion
            log.warning("prompt format %s failed: %s", fmt_name, exc)
            prompt = self._fallback_prompt.build(self.model, window.prefix, window.suffix, window.chunks, query)
        stop = list(prompt.stop) + ([] if multiline else ["\n"])
        final = await self._generate(
            GenerationRequest(
                prompt=prompt.tokens,
                max_tokens=max_tokens,
                priority=priority,
                lane_group=lane_group,
                stop=stop,
                stop_check=scope_stop(query.prefix) if multiline else None,
                stop_tokens=[*prompt.stop_tokens, *self._structural_stops],
                t_max_predict_ms=query.time_budget_ms or s.t_max_predict_ms,
                supersede_key=supersede_key,
                n_keep=prompt.n_keep,
                add_bos=prompt.add_bos,
                reuse_cache=s.reuse_cache,
            ),
            on_delta,
        )
        self.last_completion = final
        ctx = PostContext(
            prefix=query.prefix, suffix=query.suffix, language=query.language, kind="completion", multiline=multiline
        )
        text = "" if final.cancelled else self._postprocess("completion", final.text, ctx)
        return Answer(text=text, items=[text] if text else [], stats=final, stop_reason=final.stop_reason)

    def _shell_prompt(self, query: ShellQuery, chunks: list[ContextChunk]) -> tuple[str, str]:
        """(prompt text, the text the model's answer continues from)."""
        facts = "\n".join(c.text for c in chunks)
        if query.mode == "describe":
            messages = [
                ChatMessage(
                    "system",
                    f"You turn requests into one {query.shell} command. Reply with the command only.\n{facts}",
                ),
                ChatMessage("user", query.buffer.strip()),
            ]
            _, chat = self._best(self.plugins.chat_formats(), self._fallback_chat)
            rendered = self._render_chat(chat, messages)
            # Opening a fenced block makes even small models answer with a command (measured: a
            # bare "$ " made SmolLM2 start with a newline, i.e. an empty answer).
            return f"{rendered}```{query.shell}\n", ""
        # Completing a line: a transcript whose last line is the typed buffer; the model goes on.
        header = "".join(f"# {line}\n" for line in facts.splitlines() if line and not line.startswith("recent"))
        history = [c for c in chunks if c.text.startswith("recent commands:")]
        lines = history[0].text.splitlines()[1:] if history else []
        transcript = "".join(f"$ {line}\n" for line in lines)
        return f"{header}{transcript}$ {query.buffer}", query.buffer

    def _render_chat(self, chat: Any, messages: list[ChatMessage]) -> str:
        try:
            return self._format_call(self.plugins.chat_formats(), chat, "render", self.model, messages, True)
        except Exception as exc:
            log.warning("chat format failed (%s); using ChatML", exc)
            return self._fallback_chat.render(self.model, messages, True)

    async def suggest(self, query: ShellQuery) -> Answer:
        self.counters.suggestions += 1
        query.buffer = sanitize(query.buffer)
        chunks = await self._context("shell", query)
        prompt, lead = self._shell_prompt(query, chunks)
        seen: set[str] = set()
        suggestions: list[Suggestion] = []
        final: Completion | None = None
        for i in range(max(1, min(query.candidates, 5))):
            sampling = SamplingParams() if i == 0 else SamplingParams(temperature=0.8, top_p=0.95, seed=i)
            final = await self._generate(
                GenerationRequest(
                    prompt=prompt,
                    max_tokens=self.settings.shell_max_tokens,
                    priority=Priority.SHELL,
                    lane_group="shell",
                    stop=["\n", "```"],
                    sampling=sampling,
                ),
                None,
            )
            if final.cancelled:
                break
            text = sanitize((lead + final.text).strip())
            if not text or text in seen or (query.mode == "complete" and not text.startswith(query.buffer.strip())):
                continue
            seen.add(text)
            risk, reason = classify(text)
            suggestions.append(Suggestion(text=text, risk=risk, reason=reason))
        text = suggestions[0].text if suggestions else ""
        return Answer(text=text, suggestions=suggestions, stats=final, stop_reason=final.stop_reason if final else "")

    def _defuse(self, text: str) -> str:
        """Text from a client or a file must not turn into control tokens when the rendered chat
        prompt is tokenized with special tokens parsed (a file containing "<|im_end|>" would end
        the turn and could forge a system message): break each special token's spelling."""
        for special in self._special_spellings:
            if special in text:
                text = text.replace(special, special[0] + "\u200b" + special[1:])
        return text

    def _chat_messages(self, query: ChatQuery) -> list[ChatMessage]:
        messages = [ChatMessage(m.role, self._defuse(m.content)) for m in query.messages]
        last = messages[-1] if messages else None
        if last is not None and last.role == "user" and last.content.startswith("/"):
            name, _, argument = last.content[1:].partition(" ")
            for reg in self.plugins.chat_commands():
                if reg.obj.name == name:
                    try:
                        # The command sees the file and selection defused, and what it builds is
                        # defused again: neither a file nor a plugin's echo of it may forge a turn.
                        safe = dataclasses.replace(
                            query,
                            selection=self._defuse(query.selection) if query.selection else query.selection,
                            document=self._defuse(query.document) if query.document else query.document,
                        )
                        built = self.plugins.guarded_sync(reg, "messages", argument, safe, expect=list)
                    except PluginFailed:
                        break
                    if not all(isinstance(m, ChatMessage) and isinstance(m.content, str) for m in built):
                        # Like a wrong return type: the plugin is blocked, this chat goes on without it.
                        self.plugins.block(reg.plugin, f"chat command /{name} returned something other than ChatMessages")
                        break
                    return messages[:-1] + [ChatMessage(m.role, self._defuse(m.content)) for m in built]
        context = []
        if query.selection:
            selection = self._defuse(query.selection)
            context.append(f"Selected {query.language} code from {query.path or 'the editor'}:\n```\n{selection}\n```")
        elif query.document:
            budget = self.model.n_ctx // 2
            doc = self._defuse(query.document)
            if self.model.count_tokens(doc) > budget:
                doc = doc[-budget * 3 :]  # the end of the document, roughly within budget
            context.append(f"The user's file {query.path}:\n```{query.language}\n{doc}\n```")
        if context and messages:
            messages.insert(len(messages) - 1, ChatMessage("system", "\n\n".join(context)))
        return messages

    async def chat(self, query: ChatQuery, on_delta: OnDelta | None = None) -> Answer:
        self.counters.chats += 1
        messages = self._chat_messages(query)
        _, chat = self._best(self.plugins.chat_formats(), self._fallback_chat)
        prompt = self._render_chat(chat, messages)
        final = await self._generate(
            GenerationRequest(
                prompt=prompt,
                max_tokens=min(query.max_tokens, self.settings.chat_max_tokens),
                priority=Priority.CHAT,
                lane_group="chat",
                add_bos=False,
            ),
            on_delta,
        )
        return Answer(text=final.text, stats=final, stop_reason=final.stop_reason)

    def accept(self, kind: str = "completion") -> None:
        """An editor reports a suggestion was accepted (counted locally, never sent anywhere)."""
        self.counters.accepted += 1
        self.counters.accepted_by_kind[kind] = self.counters.accepted_by_kind.get(kind, 0) + 1

    def status(self) -> dict[str, Any]:
        status = self.engine.status()
        status.update(
            model_loads=model_loads(),
            plugins_generation=self.plugins.generation,
            plugins=msgspec.to_builtins(self.plugins.report()),
            requests={
                "completions": self.counters.completions,
                "suggestions": self.counters.suggestions,
                "chats": self.counters.chats,
            },
            accepted=self.counters.accepted,
            accepted_by_kind=dict(self.counters.accepted_by_kind),
        )
        return status


AssistantFactory = Callable[[Engine, PluginManager], Assistant]
