"""A small POSIX shell tokenizer: enough structure to judge a command line, never to run one.

Understands quotes (``'...'``, ``"..."``, ``$'...'``), backslash escapes, comments, the control
operators ``;`` ``&&`` ``||`` ``|`` ``|&`` ``&`` ``(`` ``)``, redirections with their file
descriptors (``2>&1``, ``&>>``), and command/process substitutions (``$(...)``, backticks,
``<(...)``), whose source is kept so that it can be judged as a command line of its own. Lenient:
an unterminated quote or substitution runs to the end of the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class Word:
    text: str  # quotes removed; $VAR, $(...) kept as written
    subs: list[str] = field(default_factory=list)  # sources of $(...), `...`, <(...), >(...)


@dataclass
class Op:
    text: str  # ; && || | |& & ( ) or a redirection (with its fd folded in)


_CONTROL_OPS = ("&&", "||", ";;", "|&", ";", "|", "&", "(", ")")
_REDIR_OPS = ("&>>", "&>", "<<<", "<<-", "<<", ">>", ">|", "<>", ">&", "<&", ">", "<")


def _balanced(s: str, i: int, close: str = ")") -> int:
    """Index just past the ``close`` that ends a ``$(`` / ``<(`` opened before ``i``."""
    depth = 1
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c in "'\"`":
            end = s.find(c, i + 1) if c == "'" else _quote_end(s, i + 1, c)
            i = len(s) if end < 0 else end + 1
            continue
        if c == "(":
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(s)  # unterminated: the rest of the line is inside


def _quote_end(s: str, i: int, q: str) -> int:
    while i < len(s):
        if s[i] == "\\":
            i += 2
            continue
        if s[i] == q:
            return i
        if q == '"' and s.startswith("$(", i):
            i = _balanced(s, i + 2)
            continue
        i += 1
    return -1


def tokenize(s: str) -> list[Word | Op]:
    tokens: list[Word | Op] = []
    buf: list[str] = []
    subs: list[str] = []
    started = False  # a word is open (even an empty one, as in "")

    def flush() -> None:
        nonlocal started
        if started:
            tokens.append(Word("".join(buf), list(subs)))
        buf.clear()
        subs.clear()
        started = False

    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c in " \t":
            flush()
            i += 1
        elif c == "\n":
            flush()
            tokens.append(Op(";"))
            i += 1
        elif c == "#" and not started:
            end = s.find("\n", i)
            i = n if end < 0 else end
        elif c == "\\":
            if s[i + 1 : i + 2] != "\n":
                buf.append(s[i + 1 : i + 2])
                started = True
            i += 2
        elif c == "'":
            end = s.find("'", i + 1)
            end = n if end < 0 else end
            buf.append(s[i + 1 : end])
            started, i = True, end + 1
        elif c == '"' or c == "`":
            end = _quote_end(s, i + 1, c)
            end = n if end < 0 else end
            inner = s[i + 1 : end]
            if c == "`":
                subs.append(inner)
                buf.append(f"`{inner}`")
            else:
                subs.extend(_substitutions(inner))
                buf.append(re.sub(r'\\([$`"\\])', r"\1", inner))
            started, i = True, end + 1
        elif c == "$" and s.startswith("$'", i):
            end = _quote_end(s, i + 2, "'")
            end = n if end < 0 else end
            buf.append(s[i + 2 : end])
            started, i = True, end + 1
        elif c == "$" and s.startswith("$(", i) or c in "<>" and s.startswith("(", i + 1) and not started:
            end = _balanced(s, i + 2)
            subs.append(s[i + 2 : end - 1] if s[end - 1 : end] == ")" else s[i + 2 : end])
            buf.append(s[i:end])
            started, i = True, end
        elif c == "$" and s.startswith("${", i):
            end = s.find("}", i)
            end = n - 1 if end < 0 else end
            buf.append(s[i : end + 1])
            started, i = True, end + 1
        elif c in "<>" or c == "&" and s[i + 1 : i + 2] == ">":
            fd = "".join(buf) if started and "".join(buf).isdigit() and not subs else ""
            if not fd:
                flush()
            op = next(o for o in _REDIR_OPS if s.startswith(o, i))
            buf.clear()
            started = False
            tokens.append(Op(fd + op))
            i += len(op)
        elif c in ";&|()":
            flush()
            op = next(o for o in _CONTROL_OPS if s.startswith(o, i))
            tokens.append(Op(op))
            i += len(op)
        else:
            buf.append(c)
            started = True
            i += 1
    flush()
    return tokens


def _substitutions(text: str) -> list[str]:
    """Command substitutions inside a double-quoted string."""
    return [w for t in tokenize(text) if isinstance(t, Word) for w in t.subs]


# ---- simple commands ---------------------------------------------------------------------------


@dataclass
class Command:
    words: list[Word] = field(default_factory=list)
    redirects: list[tuple[str, str]] = field(default_factory=list)  # (operator, target)
    subs: list[str] = field(default_factory=list)  # in assignments and redirect targets: they run too
    piped_in: bool = False  # stdin comes from the previous command of a pipeline

    @property
    def args(self) -> list[str]:
        return [w.text for w in self.words]


# Words that are syntax, not a command, when they come first.
KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for", "in", "case", "esac",
            "select", "function", "{", "}", "!", "time", "coproc"}
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\+?=")


def split_commands(tokens: list[Word | Op]) -> list[Command]:
    """The simple commands of a token list, in order (keywords and leading assignments dropped)."""
    commands = [Command()]
    expect_target: str | None = None
    for tok in tokens:
        current = commands[-1]
        if expect_target is not None:
            if isinstance(tok, Word):
                current.redirects.append((expect_target, tok.text))
                current.subs.extend(tok.subs)
                expect_target = None
                continue
            expect_target = None
        if isinstance(tok, Word):
            if not current.words and (tok.text in KEYWORDS or ASSIGNMENT.match(tok.text)):
                current.subs.extend(tok.subs)
                continue
            current.words.append(tok)
        elif tok.text.lstrip("0123456789") in _REDIR_OPS:
            expect_target = tok.text.lstrip("0123456789")
        else:
            commands.append(Command(piped_in=tok.text in ("|", "|&")))
    return [c for c in commands if c.words or c.redirects or c.subs]
