"""Slash commands for chat: ``/explain``, ``/fix``, ``/test``, ``/doc``.

Each turns the selection (or, without one, the whole document) into a system and a user
message; text after the command (``/fix the off-by-one``) is passed on as the user's own words.
Unknown commands are the assistant's business, not this plugin's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from exlsp.plugins import hookimpl
from exlsp.plugins.api import ChatMessage, ChatQuery

DEFAULTS: dict[str, Any] = {"max_code_chars": 24_000}

SYSTEM = (
    "You are a careful senior software engineer helping inside the user's editor. "
    "Answer concisely. Put code in fenced code blocks with the language name."
)

TEST_FRAMEWORKS = {
    "python": "pytest",
    "javascript": "the project's test runner (Jest or Vitest)",
    "typescript": "the project's test runner (Jest or Vitest)",
    "typescriptreact": "the project's test runner (Jest or Vitest)",
    "rust": "#[test] functions in a #[cfg(test)] module",
    "go": "the testing package (table-driven tests)",
    "java": "JUnit 5",
    "c": "the project's unit test framework",
    "cpp": "GoogleTest",
    "ruby": "RSpec",
}


def fence(code: str, language: str) -> str:
    """A fenced block that the code cannot close early (it may contain ``` itself)."""
    ticks = "```"
    while ticks in code:
        ticks += "`"
    return f"{ticks}{language}\n{code.rstrip()}\n{ticks}"


@dataclass
class CodeCommand:
    name: str
    description: str
    task: str  # what to do with "the code"
    max_code_chars: int = DEFAULTS["max_code_chars"]

    def configure(self, settings: Mapping[str, Any]) -> None:
        value = settings.get("max_code_chars")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1000:
            self.max_code_chars = value

    def instruction(self, query: ChatQuery) -> str:
        return self.task

    def messages(self, argument: str, query: ChatQuery) -> list[ChatMessage]:
        language = query.language or ""
        if query.selection and query.selection.strip():
            subject = " ".join(filter(None, ["the selected", language, "code"]))
            subject += f" from {query.path}" if query.path else ""
            code = query.selection
        elif query.document and query.document.strip():
            subject = " ".join(filter(None, ["the", language, "file", query.path]))
            code = query.document
        else:
            subject, code = "the code the user describes", ""
        parts = [self.instruction(query).replace("{subject}", subject)]
        if argument.strip():
            parts.append(f"The user adds: {argument.strip()}")
        if code:
            if len(code) > self.max_code_chars:
                # Keep the start: the imports and definitions the rest refers to.
                code = code[: self.max_code_chars] + "\n… (truncated)"
            parts.append(fence(code, language))
        else:
            parts.append("(No code was selected and no file is open: ask for it if you need it.)")
        return [ChatMessage("system", SYSTEM), ChatMessage("user", "\n\n".join(parts))]


class WriteTestsCommand(CodeCommand):
    def instruction(self, query: ChatQuery) -> str:
        framework = TEST_FRAMEWORKS.get(query.language.lower(), "the project's usual test framework")
        return f"{self.task} Use {framework}."


COMMANDS: list[CodeCommand] = [
    CodeCommand(
        "explain",
        "Explain the selection or file",
        "Explain what {subject} does: its purpose, then how it works step by step, and anything "
        "surprising or risky.",
    ),
    CodeCommand(
        "fix",
        "Find and fix bugs in the selection or file",
        "Find the bugs in {subject}. Say briefly what is wrong and why, then give the corrected "
        "code in full, changing nothing else.",
    ),
    WriteTestsCommand(
        "test",
        "Write unit tests for the selection or file",
        "Write focused unit tests for {subject}: the normal cases, the edge cases and the errors.",
    ),
    CodeCommand(
        "doc",
        "Write documentation comments for the selection or file",
        "Write documentation for {subject} in the language's usual style (docstrings, JSDoc, "
        "rustdoc ...). Return the code with the documentation added and nothing else changed.",
    ),
]


@hookimpl
def exlsp_register_chat_commands(register: Any) -> None:
    for command in COMMANDS:
        register(command)


@hookimpl
def exlsp_default_settings() -> dict[str, Any]:
    return dict(DEFAULTS)
