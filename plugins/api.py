"""The objects plugins register, and the queries they work on.

Hooks (``hookspecs.py``) only *register* objects; the objects do the work. Everything here is plain
data or a small Protocol: no LSP, no sockets, no backend. Prompt builders get a ``ModelInfo``
(special tokens, chat template, an exact token counter) instead of the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Literal, Protocol, Sequence, runtime_checkable

from exlsp.runtime import SpecialTokens

Kind = Literal["completion", "shell", "chat"]


# ---- queries (what the front doors hand to the assistant) --------------------------------------


@dataclass(slots=True)
class CompletionQuery:
    """Complete code at a cursor. ``prefix``/``suffix``: the document's text before/after it."""

    prefix: str
    suffix: str = ""
    language: str = ""
    path: str = ""  # file path or URI, for context and multi-file prompts
    trigger: Literal["automatic", "invoked"] = "automatic"
    max_tokens: int = 64
    candidates: int = 1
    # Per-request overrides of the assistant's settings (from the editor's configuration).
    budget_tokens: int | None = None
    time_budget_ms: float | None = None
    # Other documents the editor knows (path -> text), for context providers.
    open_documents: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ShellQuery:
    buffer: str
    cursor: int | None = None
    shell: str = "bash"
    cwd: str = ""
    history: list[str] = field(default_factory=list)
    exit_status: int | None = None
    mode: Literal["complete", "describe"] = "complete"
    candidates: int = 3
    git_branch: str | None = None
    os: str = ""


@dataclass(slots=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(slots=True)
class ChatQuery:
    messages: list[ChatMessage]
    document: str | None = None  # text of the current document, if the client sent it
    path: str = ""
    language: str = ""
    selection: str | None = None
    max_tokens: int = 512
    # The chat session the front door records this turn in (chat_sessions.py); when set,
    # ``messages`` already holds the stored history. The assistant itself does not read it.
    session: str | None = None


Query = CompletionQuery | ShellQuery | ChatQuery


# ---- what prompt builders know of the model -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    special: SpecialTokens
    chat_template: str | None
    n_ctx: int
    count_tokens: Callable[[str], int]
    encode: Callable[[str], list[int]]  # no BOS, special tokens not parsed (user text stays text)


@dataclass(slots=True)
class ContextChunk:
    """A piece of extra context for a prompt. ``stable`` chunks go first in the prompt."""

    source: str  # provider name
    text: str
    path: str = ""
    tokens: int = 0  # filled in by the assembler
    stable: bool = True


@dataclass(slots=True)
class Prompt:
    """What a prompt format produces: tokens for the engine, plus stops and generation hints."""

    tokens: list[int]
    stop: list[str] = field(default_factory=list)
    # Tokens that end the completion although they decode to no text (<|file_sep|>, <fim_pad>).
    stop_tokens: list[int] = field(default_factory=list)
    n_keep: int = 0
    add_bos: bool = True


# ---- the objects plugins register -----------------------------------------------------------------


@runtime_checkable
class PromptFormat(Protocol):
    """Builds completion prompts (FIM or prefix-only) for a family of models.

    ``score`` says how well the format fits the loaded model (0 = not at all); the highest score
    wins, ties go to the plugin registered last (user plugins after built-ins)."""

    name: str

    def score(self, model: ModelInfo) -> int: ...

    def build(
        self, model: ModelInfo, prefix: str, suffix: str, context: Sequence[ContextChunk], query: CompletionQuery
    ) -> Prompt: ...


@runtime_checkable
class ChatFormat(Protocol):
    name: str

    def score(self, model: ModelInfo) -> int: ...

    def render(self, model: ModelInfo, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str: ...


@runtime_checkable
class ContextProvider(Protocol):
    """Gathers context for one or more query kinds within a time budget (``timeout_s``)."""

    name: str
    kinds: frozenset[str]
    timeout_s: float

    def provide(self, query: Query, model: ModelInfo) -> Sequence[ContextChunk] | Awaitable[Sequence[ContextChunk]]: ...


@dataclass(slots=True)
class PostContext:
    """What a post-processor may look at besides the raw completion."""

    prefix: str
    suffix: str
    language: str = ""
    kind: Kind = "completion"
    multiline: bool = True


@runtime_checkable
class PostProcessor(Protocol):
    """Rewrites a raw completion. Runs in ascending ``order``; returning "" drops it."""

    name: str
    order: int
    kinds: frozenset[str]

    def process(self, text: str, ctx: PostContext) -> str: ...


@runtime_checkable
class ChatCommand(Protocol):
    """A slash command (``/explain``): turns the user's request and context into messages."""

    name: str  # without the slash
    description: str

    def messages(self, argument: str, query: ChatQuery) -> list[ChatMessage]: ...


Register = Callable[[Any], None]


# ---- answers (what the assistant hands back to the front doors) ---------------------------------


@dataclass(slots=True)
class Suggestion:
    """A shell command suggestion. exlsp never executes it."""

    text: str
    risk: Literal["low", "medium", "high"] = "low"
    reason: str = ""


@dataclass(slots=True)
class Answer:
    """The final result of a complete/chat/suggest call. ``items`` holds the post-processed
    candidates for completions (``text`` is the first); ``stats`` the engine's final record."""

    text: str
    items: list[str] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)
    stats: Any = None  # exlsp.runtime.Completion of the (last) generation
    stop_reason: str = ""


OnDelta = Callable[[str], Awaitable[None] | None]
