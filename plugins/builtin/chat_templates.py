"""Chat formats: the model's own Jinja2 chat template, and ChatML for models without one.

Templates come from the model file, so they run in jinja2's immutable sandbox with the helpers
Hugging Face's ``apply_chat_template`` offers (``raise_exception``, ``strftime_now``, ``tojson``,
``bos_token``/``eos_token``). A template that fails is never the user's problem: it scores 0 when
it cannot render a plain conversation, and ``render`` falls back to ChatML when it fails later.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any, Sequence

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from exlsp.plugins import hookimpl
from exlsp.plugins.api import ChatMessage, ModelInfo

log = logging.getLogger(__name__)

PROBE = [ChatMessage("user", "Hello")]


class TemplateError(Exception):
    """Raised by a template's own ``raise_exception``."""


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:  # fmt: skip
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` marks assistant text for training masks in
    transformers; for rendering it is its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> Any:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _environment() -> ImmutableSandboxedEnvironment:
    # trim_blocks/lstrip_blocks as in transformers: templates are written for them.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols, _GenerationTag]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _token_text(model: ModelInfo, token: int | None) -> str:
    if token is None:
        return ""
    return next((text for text, t in model.special.by_text.items() if t == token), "")


class ChatMLFormat:
    """``<|im_start|>role\\ncontent<|im_end|>\\n``: what most small instruct models were tuned on."""

    name = "chatml"

    def score(self, model: ModelInfo) -> int:
        return 2 if "<|im_start|>" in model.special.by_text else 1

    def render(self, model: ModelInfo, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        text = "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


class ModelTemplateFormat:
    """The chat template shipped with the model (GGUF ``tokenizer.chat_template`` or
    ``tokenizer_config.json``)."""

    name = "model-template"

    def __init__(self, fallback: ChatMLFormat | None = None) -> None:
        self.env = _environment()
        self.fallback = fallback or ChatMLFormat()
        self._compiled: dict[str, jinja2.Template | Exception] = {}
        self._works: dict[str, bool] = {}

    def _template(self, source: str) -> jinja2.Template:
        compiled = self._compiled.get(source)
        if compiled is None:
            if len(self._compiled) > 8:
                self._compiled.clear()
            try:
                compiled = self.env.from_string(source)
            except Exception as exc:  # a syntax error: remember it, do not recompile per request
                compiled = exc
            self._compiled[source] = compiled
        if isinstance(compiled, Exception):
            raise compiled
        return compiled

    def _render(self, model: ModelInfo, messages: Sequence[ChatMessage], add_generation_prompt: bool) -> str:
        assert model.chat_template
        return self._template(model.chat_template).render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=_token_text(model, model.special.bos),
            eos_token=_token_text(model, model.special.eos),
            tools=None,
            documents=None,
        )

    def score(self, model: ModelInfo) -> int:
        if not model.chat_template:
            return 0
        works = self._works.get(model.chat_template)
        if works is None:
            try:
                works = bool(self._render(model, PROBE, True).strip())
            except Exception as exc:
                log.warning("the model's chat template does not render (%s); using ChatML", exc)
                works = False
            self._works[model.chat_template] = works
        return 100 if works else 0

    def render(self, model: ModelInfo, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        if not model.chat_template:
            return self.fallback.render(model, messages, add_generation_prompt)
        try:
            return self._render(model, messages, add_generation_prompt)
        except Exception as first:
            # Templates that refuse a system role (Gemma, Mistral v1) accept it folded into the
            # first user message.
            folded = fold_system(messages)
            if folded is not None:
                try:
                    return self._render(model, folded, add_generation_prompt)
                except Exception:
                    pass
            log.warning("the model's chat template failed (%s); using ChatML", first)
            return self.fallback.render(model, messages, add_generation_prompt)


def fold_system(messages: Sequence[ChatMessage]) -> list[ChatMessage] | None:
    """The system messages prepended to the first user message; None when there are none."""
    system = [m.content for m in messages if m.role == "system"]
    if not system:
        return None
    rest = [m for m in messages if m.role != "system"]
    head = "\n\n".join(system)
    for i, m in enumerate(rest):
        if m.role == "user":
            rest[i] = ChatMessage("user", f"{head}\n\n{m.content}")
            return rest
    return [ChatMessage("user", head), *rest]


CHATML = ChatMLFormat()
MODEL_TEMPLATE = ModelTemplateFormat(CHATML)


@hookimpl
def exlsp_register_chat_formats(register: Any) -> None:
    register(CHATML)
    register(MODEL_TEMPLATE)
