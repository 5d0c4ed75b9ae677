"""Completion prompt formats: fill-in-the-middle per model family, and prefix-only.

Each format finds its special tokens by text in the model's vocabulary (``special.by_text``) and
scores > 0 only when all of its required tokens exist: SmolLM2 has StarCoder2's ``<repo_name>`` and
``<file_sep>`` but no ``<fim_*>`` tokens, so it gets the prefix-only format. Prompts are token
lists: special tokens as ids, the user's text through ``model.encode`` (never parsed for special
tokens). The caller windows prefix, suffix and context (``layout.py``); ``build`` only guarantees
that prompt + answer fit ``n_ctx``, dropping context first, then the far ends of prefix and suffix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from exlsp.plugins import hookimpl
from exlsp.plugins.api import CompletionQuery, ContextChunk, ModelInfo, Prompt

from .layout import DEFAULTS as LAYOUT_DEFAULTS

DEFAULTS: dict[str, Any] = {"repo_name": "project", **LAYOUT_DEFAULTS}

# Line comments for chunk headers in formats without a file separator token.
HASH_COMMENT = frozenset(
    {"python", "shellscript", "sh", "bash", "zsh", "fish", "ruby", "perl", "r", "yaml", "toml", "make",
     "makefile", "dockerfile", "cmake", "elixir", "julia", "nim", "powershell", "coffeescript"}
)  # fmt: skip
DASH_COMMENT = frozenset({"lua", "sql", "haskell", "ada", "elm", "purescript"})


def comment_leader(language: str) -> str:
    language = language.lower()
    return "#" if language in HASH_COMMENT else "--" if language in DASH_COMMENT else "//"


@dataclass(slots=True)
class Part:
    """A run of prompt tokens. ``role`` says what may be cut when the prompt is too long:
    "chunk" goes whole, "prefix" loses its start, "suffix" its end, "fixed" never."""

    role: str
    tokens: list[int]


def _lookup(model: ModelInfo, spellings: Sequence[str]) -> tuple[str, int] | None:
    for text in spellings:
        token = model.special.by_text.get(text)
        if token is not None:
            return text, token
    return None


def _limit(model: ModelInfo, query: CompletionQuery) -> int:
    """Prompt tokens allowed: the context minus the answer and BOS (the engine never lets an
    answer take more than half the context)."""
    bos = 1 if model.special.add_bos and model.special.bos is not None else 0
    return max(1, model.n_ctx - bos - max(1, min(query.max_tokens, model.n_ctx // 2)))


def fit(parts: list[Part], limit: int) -> list[int]:
    """The tokens of ``parts``, at most ``limit``: whole chunks go first (oldest first), then
    prefix and suffix lose their far ends, keeping the prefix's three quarters of the room."""
    over = sum(len(p.tokens) for p in parts) - limit
    for part in parts:
        if over <= 0:
            break
        if part.role == "chunk":
            over -= len(part.tokens)
            part.tokens = []
    if over > 0:
        local = [p for p in parts if p.role in ("prefix", "suffix")]
        room = max(0, limit - sum(len(p.tokens) for p in parts if p.role not in ("prefix", "suffix")))
        have = {role: sum(len(p.tokens) for p in local if p.role == role) for role in ("prefix", "suffix")}
        keep_suffix = min(have["suffix"], max(room // 4, room - have["prefix"]))
        keep = {"prefix": room - keep_suffix, "suffix": keep_suffix}
        for part in local:  # one part per role in every format here
            n = min(len(part.tokens), keep[part.role])
            part.tokens = part.tokens[len(part.tokens) - n :] if part.role == "prefix" else part.tokens[:n]
            keep[part.role] -= n
    tokens = [t for p in parts for t in p.tokens]
    return tokens[-limit:] if len(tokens) > limit else tokens


def commented_texts(chunks: Sequence[ContextChunk], language: str) -> list[str]:
    """Context as plain text for formats without a file separator: a comment naming the file,
    then the text (the way repository-level FIM data joins files)."""
    leader = comment_leader(language)
    texts = []
    for c in chunks:
        header = f"{leader} {c.path}\n" if c.path else ""
        body = c.text if c.text.endswith("\n") else c.text + "\n"
        texts.append(header + body + "\n")
    return texts


def commented_chunks(model: ModelInfo, chunks: Sequence[ContextChunk], language: str) -> list[Part]:
    return [Part("chunk", model.encode(text)) for text in commented_texts(chunks, language)]


class FimFormat:
    """Prefix-suffix-middle: [context] PRE prefix SUF suffix MID. Subclasses name their tokens."""

    name = "fim"
    uses_suffix = True  # the caller may leave the suffix out of the budget when False
    # Role -> accepted spellings (first found wins). All roles here are required.
    required: dict[str, tuple[str, ...]] = {}
    optional: dict[str, tuple[str, ...]] = {}

    def __init__(self) -> None:
        self.repo_name = DEFAULTS["repo_name"]

    def configure(self, settings: Mapping[str, Any]) -> None:
        name = settings.get("repo_name")
        if isinstance(name, str) and name.strip() and "\n" not in name:
            self.repo_name = name.strip()

    def tokens(self, model: ModelInfo) -> dict[str, int] | None:
        """This family's token ids by role, or None when a required one is missing."""
        found: dict[str, int] = {}
        for role, spellings in self.required.items():
            hit = _lookup(model, spellings)
            if hit is None:
                return None
            found[role] = hit[1]
        for role, spellings in self.optional.items():
            hit = _lookup(model, spellings)
            if hit is not None:
                found[role] = hit[1]
        return found

    def score(self, model: ModelInfo) -> int:
        ids = self.tokens(model)
        if ids is None:
            return 0
        # More required tokens: a more specific family. The backend's own FIM detection agreeing
        # with ours breaks what ties remain.
        agree = ids.get("prefix") is not None and ids.get("prefix") == model.special.fim_prefix
        return 10 * len(self.required) + 2 * (len(ids) - len(self.required)) + (1 if agree else 0)

    def build(
        self, model: ModelInfo, prefix: str, suffix: str, context: Sequence[ContextChunk], query: CompletionQuery
    ) -> Prompt:
        ids = self.tokens(model)
        if ids is None:
            raise ValueError(f"{model.name} lacks the {self.name} FIM tokens")
        parts = self.assemble(model, ids, prefix, suffix, context, query)
        return Prompt(tokens=fit(parts, _limit(model, query)), stop=[], add_bos=True)

    def assemble(
        self,
        model: ModelInfo,
        ids: dict[str, int],
        prefix: str,
        suffix: str,
        context: Sequence[ContextChunk],
        query: CompletionQuery,
    ) -> list[Part]:
        enc = model.encode
        return [
            *commented_chunks(model, context, query.language),
            Part("fixed", [ids["prefix"]]),
            Part("prefix", enc(prefix)),
            Part("fixed", [ids["suffix"]]),
            Part("suffix", enc(suffix)),
            Part("fixed", [ids["middle"]]),
        ]


class QwenCoderFormat(FimFormat):
    """Qwen2.5-Coder; with context: <|repo_name|>name <|file_sep|>path\\ntext ... then the current
    file's <|file_sep|>path\\n before the FIM tokens (Qwen's repository-level format)."""

    name = "qwen2.5-coder"
    required = {"prefix": ("<|fim_prefix|>",), "suffix": ("<|fim_suffix|>",), "middle": ("<|fim_middle|>",)}
    optional = {"repo": ("<|repo_name|>",), "sep": ("<|file_sep|>",)}

    def assemble(self, model, ids, prefix, suffix, context, query):  # type: ignore[no-untyped-def]
        if not context or "repo" not in ids or "sep" not in ids:
            return super().assemble(model, ids, prefix, suffix, context, query)
        enc = model.encode
        parts = [Part("fixed", [ids["repo"], *enc(self.repo_name + "\n")])]
        for c in context:
            body = c.text if c.text.endswith("\n") else c.text + "\n"
            parts.append(Part("chunk", [ids["sep"], *enc(f"{c.path or 'context'}\n{body}")]))
        parts += [
            Part("fixed", [ids["sep"], *enc(f"{query.path or 'main'}\n"), ids["prefix"]]),
            Part("prefix", enc(prefix)),
            Part("fixed", [ids["suffix"]]),
            Part("suffix", enc(suffix)),
            Part("fixed", [ids["middle"]]),
        ]
        return parts


class StarCoderFormat(FimFormat):
    """StarCoder (and SantaCoder's hyphenated spelling)."""

    name = "starcoder"
    required = {
        "prefix": ("<fim_prefix>", "<fim-prefix>"),
        "suffix": ("<fim_suffix>", "<fim-suffix>"),
        "middle": ("<fim_middle>", "<fim-middle>"),
    }


class StarCoder2Format(FimFormat):
    """StarCoder2's repository format: <repo_name>name<file_sep>path\\ntext ... and the current file
    as <file_sep><fim_prefix>path\\nprefix<fim_suffix>suffix<fim_middle>."""

    name = "starcoder2"
    required = {**StarCoderFormat.required, "repo": ("<repo_name>",), "sep": ("<file_sep>",)}

    def assemble(self, model, ids, prefix, suffix, context, query):  # type: ignore[no-untyped-def]
        if not context:
            return super().assemble(model, ids, prefix, suffix, (), query)
        enc = model.encode
        parts = [Part("fixed", [ids["repo"], *enc(self.repo_name)])]
        for c in context:
            body = c.text if c.text.endswith("\n") else c.text + "\n"
            parts.append(Part("chunk", [ids["sep"], *enc(f"{c.path or 'context'}\n{body}")]))
        parts += [
            Part("fixed", [ids["sep"], ids["prefix"], *enc(f"{query.path or 'main'}\n")]),
            Part("prefix", enc(prefix)),
            Part("fixed", [ids["suffix"]]),
            Part("suffix", enc(suffix)),
            Part("fixed", [ids["middle"]]),
        ]
        return parts


class CodeLlamaFormat(FimFormat):
    """``<PRE> prefix <SUF>suffix <MID>``, spaces as in Meta's reference tokenizer. Released
    vocabularies spell the tokens with SentencePiece's "▁" (a space) in front, which then holds the
    space before <SUF> and <MID>. Text is encoded without the encoder's own dummy space, so that
    the only spaces are these."""

    name = "codellama"
    required = {"prefix": ("▁<PRE>", "<PRE>"), "suffix": ("▁<SUF>", "<SUF>"), "middle": ("▁<MID>", "<MID>")}

    def assemble(self, model, ids, prefix, suffix, context, query):  # type: ignore[no-untyped-def]
        by_text = model.special.by_text
        before_suf = "" if "▁<SUF>" in by_text else " "
        before_mid = "" if "▁<MID>" in by_text else " "
        chunks = [Part("chunk", encode_bare(model, p)) for p in commented_texts(context, query.language)]
        return [
            Part("fixed", [ids["prefix"]]),
            *chunks,
            Part("prefix", encode_bare(model, " " + prefix + before_suf)),
            Part("fixed", [ids["suffix"]]),
            Part("suffix", encode_bare(model, suffix + before_mid)),
            Part("fixed", [ids["middle"]]),
        ]


class DeepSeekCoderFormat(FimFormat):
    name = "deepseek-coder"
    required = {"prefix": ("<｜fim▁begin｜>",), "suffix": ("<｜fim▁hole｜>",), "middle": ("<｜fim▁end｜>",)}


class CodestralFormat(FimFormat):
    """Mistral's FIM, suffix first: ``[SUFFIX]suffix[PREFIX]prefix``; the answer follows."""

    name = "codestral"
    required = {"suffix": ("[SUFFIX]",), "prefix": ("[PREFIX]",)}

    def assemble(self, model, ids, prefix, suffix, context, query):  # type: ignore[no-untyped-def]
        enc = model.encode
        return [
            Part("fixed", [ids["suffix"]]),
            Part("suffix", enc(suffix)),
            Part("fixed", [ids["prefix"]]),
            *commented_chunks(model, context, query.language),
            Part("prefix", enc(prefix)),
        ]


class GenericFimFormat(FimFormat):
    """PSM with the FIM ids the backend found, for vocabularies no family here names."""

    name = "fim-generic"

    def tokens(self, model: ModelInfo) -> dict[str, int] | None:
        sp = model.special
        if not sp.has_fim:
            return None
        return {"prefix": sp.fim_prefix, "suffix": sp.fim_suffix, "middle": sp.fim_middle}  # type: ignore[dict-item]

    def score(self, model: ModelInfo) -> int:
        return 5 if self.tokens(model) is not None else 0


class PrefixOnlyFormat:
    """The text before the cursor, for models without FIM tokens. Such a model cannot see the
    suffix, so it stops where it starts repeating the suffix's next line."""

    name = "prefix-only"
    uses_suffix = False

    def score(self, model: ModelInfo) -> int:
        return 1

    def build(
        self, model: ModelInfo, prefix: str, suffix: str, context: Sequence[ContextChunk], query: CompletionQuery
    ) -> Prompt:
        parts = [*commented_chunks(model, context, query.language), Part("prefix", model.encode(prefix))]
        return Prompt(tokens=fit(parts, _limit(model, query)), stop=suffix_stops(suffix), add_bos=True)


def suffix_stops(suffix: str) -> list[str]:
    """A stop at the suffix's next non-blank line, when it is distinctive enough not to be hit
    by chance (short lines like ``}`` are left to the post-processors)."""
    lines = suffix.replace("\r\n", "\n").split("\n")
    for line in lines[1:]:
        if line.strip():
            return ["\n" + line] if len(line.strip()) >= 8 else []
    return []


def adds_space_prefix(model: ModelInfo) -> bool:
    """Whether ``encode`` puts SentencePiece's dummy space before the text itself: then "a"
    encodes like the " a" at the end of "b a", and "b a" splits into exactly those two parts."""
    a, b, ba = model.encode("a"), model.encode("b"), model.encode("b a")
    return len(ba) == len(a) + len(b) and ba[len(b) :] == a


def encode_bare(model: ModelInfo, text: str) -> list[int]:
    """``encode`` without SentencePiece's dummy space: encode after a newline, drop the newline."""
    if not text or not adds_space_prefix(model):
        return model.encode(text)
    newline = model.encode("\n")
    tokens = model.encode("\n" + text)
    return tokens[len(newline) :] if tokens[: len(newline)] == newline else model.encode(text)


FORMATS: list[Any] = [
    QwenCoderFormat(),
    StarCoderFormat(),
    StarCoder2Format(),
    CodeLlamaFormat(),
    DeepSeekCoderFormat(),
    CodestralFormat(),
    GenericFimFormat(),
    PrefixOnlyFormat(),
]


@hookimpl
def exlsp_register_prompt_formats(register: Any) -> None:
    for fmt in FORMATS:
        register(fmt)


@hookimpl
def exlsp_default_settings() -> dict[str, Any]:
    """``repo_name`` heads multi-file prompts; the rest are ``PromptLayout``'s settings."""
    return dict(DEFAULTS)
