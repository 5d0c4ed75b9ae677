"""The tokenization service: exact token counts for prompt budgets, and the model's special tokens.

Tokenizing reads only the vocabulary, never the KV cache, so it runs on the caller's thread and
does not queue behind generation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from .types import SpecialTokens

if TYPE_CHECKING:
    from .backends.base import Backend


class Tokenizer:
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    @property
    def special(self) -> SpecialTokens:
        return self._backend.special_tokens

    @property
    def vocab_size(self) -> int:
        return self._backend.vocab_size

    def encode(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        """Token ids of ``text``; ``special`` parses special-token text (``<|im_start|>``)."""
        return self._backend.tokenize(text, add_bos=add_bos, special=special)

    def decode(self, tokens: Sequence[int]) -> str:
        return b"".join(self._backend.token_bytes(t) for t in tokens).decode("utf-8", "replace")

    def count(self, text: str) -> int:
        return len(self._backend.tokenize(text, add_bos=False, special=False))

    def token_text(self, token: int) -> str:
        return self._backend.token_bytes(token).decode("utf-8", "replace")
