"""Chat formats: the model's own Jinja2 template (sandboxed, HF helpers), ChatML as the fallback."""

from __future__ import annotations

import datetime

import pluggy
import pytest

from exlsp.plugins import PROJECT, hookspecs
from exlsp.plugins.api import ChatFormat, ChatMessage, ModelInfo
from exlsp.plugins.builtin import chat_templates
from exlsp.plugins.builtin.chat_templates import ChatMLFormat, ModelTemplateFormat, fold_system
from exlsp.runtime import SpecialTokens

LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
    "+ message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
LLAMA3_TOKENS = {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|start_header_id|>": 128006,
                 "<|end_header_id|>": 128007, "<|eot_id|>": 128009}  # fmt: skip
NO_SYSTEM = (  # Gemma-like: refuses a system role, wants user/assistant turns
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
DATED = "{{ strftime_now('%Y') }}|{% for m in messages %}{{ m['content'] | tojson }}{% endfor %}"
ALWAYS_RAISES = "{{ raise_exception('no thanks') }}"
BROKEN_SYNTAX = "{% for m in messages %}{{ m['content'] }"
SANDBOX_ESCAPE = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
GENERATION_TAG = "{% for m in messages %}{% generation %}{{ m['content'] }}{% endgeneration %}{% endfor %}"

CHAT = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi?"), ChatMessage("assistant", "Hello."),
        ChatMessage("user", "Sum 1+2")]  # fmt: skip


def model_with(template: str | None, by_text: dict | None = None, bos: int | None = None, eos: int | None = None):
    special = SpecialTokens(bos=bos, eos=eos, by_text=by_text or {})
    return ModelInfo("m", special, template, 2048, len, lambda s: list(s.encode()))  # type: ignore[arg-type]


def chosen(model: ModelInfo):
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(chat_templates)
    found: list = []
    pm.hook.exlsp_register_chat_formats(register=found.append)
    assert all(isinstance(f, ChatFormat) for f in found)
    best = None
    for fmt in found:
        score = fmt.score(model)
        if score > 0 and (best is None or score >= best[0]):
            best = (score, fmt)
    return best[1]


@pytest.mark.model
def test_default_models_own_template(default_model_path):
    from exlsp.runtime import BackendConfig, load_backend, resolve_model

    backend = load_backend(resolve_model(default_model_path), BackendConfig(n_lanes=1, n_ctx=512))
    assert backend.chat_template and "im_start" in backend.chat_template
    model = ModelInfo("smollm2", backend.special_tokens, backend.chat_template, 512, len, list)  # type: ignore
    fmt = chosen(model)
    assert fmt.name == "model-template"
    assert fmt.render(model, [ChatMessage("user", "hi")]) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    # With a system message of its own the template's default one goes; ChatML is the same then.
    assert fmt.render(model, CHAT) == ChatMLFormat().render(model, CHAT)


def test_llama3_style_template_with_bos_token():
    model = model_with(LLAMA3, LLAMA3_TOKENS, bos=128000, eos=128009)
    fmt = chosen(model)
    assert fmt.name == "model-template"
    text = fmt.render(model, CHAT[:2])
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert not fmt.render(model, CHAT[:2], add_generation_prompt=False).endswith("assistant<|end_header_id|>\n\n")


def test_template_refusing_system_gets_it_folded_into_the_first_user_turn():
    model = model_with(NO_SYSTEM)
    assert chosen(model).name == "model-template"  # a plain conversation renders
    text = chosen(model).render(model, CHAT)
    assert text.startswith("<start_of_turn>user\nBe brief.\n\nHi?<end_of_turn>\n")
    assert text.endswith("<start_of_turn>model\n")


def test_hf_helpers():
    model = model_with(DATED)
    assert chosen(model).render(model, [ChatMessage("user", 'say "ü"')]) == (
        f'{datetime.datetime.now().year}|"say \\"ü\\""'
    )
    assert chosen(model_with(GENERATION_TAG)).render(model_with(GENERATION_TAG), CHAT[1:2]) == "Hi?"


@pytest.mark.parametrize("template", [ALWAYS_RAISES, BROKEN_SYNTAX, SANDBOX_ESCAPE, None, ""])
def test_unusable_templates_fall_back_to_chatml(template):
    model = model_with(template, {"<|im_start|>": 1})
    fmt = chosen(model)
    expected = ChatMLFormat().render(model, CHAT)
    if template == SANDBOX_ESCAPE:
        # The sandbox refuses the attribute: the probe fails, so the template never wins.
        assert ModelTemplateFormat().score(model) == 0
    assert fmt.name == "chatml" and fmt.render(model, CHAT) == expected
    # Even asked directly, the template format never raises to the user.
    assert ModelTemplateFormat().render(model, CHAT) == expected


def test_chatml_rendering_and_scores():
    text = ChatMLFormat().render(model_with(None), CHAT[:2])
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    assert ChatMLFormat().score(model_with(None, {"<|im_start|>": 1})) > ChatMLFormat().score(model_with(None)) > 0
    assert ModelTemplateFormat().score(model_with(LLAMA3, LLAMA3_TOKENS)) > ChatMLFormat().score(model_with(None))


def test_fold_system():
    assert fold_system(CHAT[1:]) is None
    assert fold_system([ChatMessage("system", "S")]) == [ChatMessage("user", "S")]
