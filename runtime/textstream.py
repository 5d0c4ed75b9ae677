"""Turning sampled tokens into text that is safe to show: whole UTF-8 characters only, and never
the beginning of a stop string that may still complete."""

from __future__ import annotations

import codecs
from typing import Sequence


class StopStringMatcher:
    def __init__(self, stops: Sequence[str] = ()) -> None:
        self.stops = [s for s in stops if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self._emitted = 0
        self.stopped = False
        self._longest = max((len(s) for s in self.stops), default=0)

    def feed(self, data: bytes) -> str:
        """Add a token's bytes; return the text that became safe to show."""
        if self.stopped:
            return ""
        self.text += self._decoder.decode(data)
        if self.stops:
            window = max(0, self._emitted - self._longest)
            hits = [i for i in (self.text.find(s, window) for s in self.stops) if i >= 0]
            if hits:
                self.text = self.text[: min(hits)]
                self.stopped = True
                return self._release(len(self.text))
            return self._release(len(self.text) - self._held_back())
        return self._release(len(self.text))

    def flush(self) -> str:
        """End of generation: whatever was held back is final text after all."""
        if not self.stopped:
            self.text += self._decoder.decode(b"", final=True)
        return self._release(len(self.text))

    def cut(self, end: int) -> None:
        """End the text at ``end`` (a caller's stop rule); nothing past it is released."""
        self.text = self.text[:end]
        self._emitted = min(self._emitted, end)
        self.stopped = True

    @property
    def emitted_text(self) -> str:
        return self.text[: self._emitted]

    def _held_back(self) -> int:
        longest = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:k]):
                    longest = k
                    break
        return longest

    def _release(self, end: int) -> str:
        end = max(end, self._emitted)
        out = self.text[self._emitted : end]
        self._emitted = end
        return out
