"""Redact secrets in shell history lines before they reach a prompt.

History is the most secret-laden text a shell hands us: ``export GITHUB_TOKEN=...``,
``mysql -pS3cret``, ``curl -H "Authorization: Bearer ..."``. Each secret is replaced by
``«redacted»`` and everything else is kept, so that the model still sees the shape of the command
(``export GITHUB_TOKEN=«redacted»``). Words that merely *mention* secrets stay
(``git commit -m "fix password field"``, ``kubectl get secrets``): only values are redacted.

``redact`` is idempotent, and the mark never looks like a secret itself.
"""

from __future__ import annotations

import re
from typing import Iterable

MARK = "«redacted»"

# A value after "=" or an option: a quoted string, or a run of non-space characters.
_VALUE = r"""(?:"[^"]*"?|'[^']*'?|[^\s'";&|]+)"""
_SECRET_LAST = {"password", "passwd", "passphrase", "pass", "pwd", "secret", "token", "key", "apikey", "credential",
                "credentials", "auth", "pat"}
_SECRET_ANY = {"password", "passwd", "passphrase", "secret"}
# What a name ends with when its value is a reference to a secret, not the secret.
_NOT_SECRET_LAST = {"file", "path", "dir", "name", "id", "url", "uri", "env", "arn", "type", "length", "size",
                    "count", "field", "header", "prompt", "ref", "hint", "policy", "command", "cmd", "helper"}


def _secret_name(name: str) -> bool:
    """Whether a variable, parameter or option named ``name`` holds a secret: ``GITHUB_TOKEN``,
    ``PGPASSWORD``, ``api-key``, ``SECRET_KEY_BASE``; not ``max_tokens``, ``password_file``."""
    parts = [p for p in re.split(r"[_\-.]+", name.lower()) if p]
    if not parts or parts[-1] in _NOT_SECRET_LAST:
        return False
    return (
        parts[-1] in _SECRET_LAST
        or any(p in _SECRET_ANY for p in parts)
        or any(p.endswith(("password", "passwd", "secret", "token", "apikey")) for p in parts)
    )


def _literal(value: str) -> bool:
    """A value written out, as opposed to a reference ($VAR, $(cmd), "$1") or a file path."""
    if value.startswith("'"):
        return len(value) > 2
    bare = value.strip('"')
    return bool(bare) and not bare.startswith(("$", "`", "/", "~/", "./", "../", "<"))


# Token formats with a recognisable shape: redacted wherever they appear.
_TOKENS = [
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|.*)",
    r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b",  # AWS access key ids
    r"\bgh[pousr]_[A-Za-z0-9]{30,}\b",  # GitHub tokens
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"\bglpat-[A-Za-z0-9_-]{20,}",  # GitLab
    r"\bsk-(?:[a-z0-9]+-){0,3}[A-Za-z0-9_]{20,}[A-Za-z0-9_-]*",  # OpenAI, Anthropic (sk-ant-...)
    r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",  # Slack
    r"https://hooks\.slack\.com/services/[A-Za-z0-9/]+",
    r"\bhf_[A-Za-z0-9]{30,}\b",  # Hugging Face
    r"\bnpm_[A-Za-z0-9]{36}\b",
    r"\bAIza[0-9A-Za-z_-]{35}\b",  # Google API keys
    r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWTs
]
_TOKEN_RE = re.compile("|".join(f"(?:{t})" for t in _TOKENS), re.DOTALL)

# (pattern, replacement): the pattern's groups keep what is not secret.
_RULES: list[tuple[re.Pattern[str], str]] = [
    # scheme://user:password@host  ->  keep the user and the host
    (re.compile(r"\b([a-z][a-z0-9+.-]*://[^\s:/@'\"]+:)([^\s@/'\"]+)(@)", re.I), rf"\1{MARK}\3"),
    # HTTP headers carrying credentials, keeping the scheme word (Bearer, Basic, token)
    (
        re.compile(r"\b((?:proxy-)?authorization\s*:\s*(?:(?:bearer|basic|token|digest|negotiate)\s+)?)([^\s'\"]+)", re.I),
        rf"\1{MARK}",
    ),
    (re.compile(r"\b((?:x-)?(?:api-key|auth-token|access-token|private-token)\s*:\s*)([^\s'\"]+)", re.I), rf"\1{MARK}"),
    (re.compile(r"\b(bearer\s+)([A-Za-z0-9._~+/=-]{8,})", re.I), rf"\1{MARK}"),
    # curl -u user:password / --user user:password
    (re.compile(rf"(\s(?:-u|--user)\s+['\"]?[^\s:'\"]+:)([^\s'\"]+)"), rf"\1{MARK}"),
    # sshpass -p secret
    (re.compile(rf"(\bsshpass\s+-p\s*)({_VALUE})"), rf"\1{MARK}"),
]
# NAME=value (export GITHUB_TOKEN=..., PGPASSWORD=..., ?password=... in a URL); fish's
# set -x NAME value, csh's setenv NAME value; --name value, --name=value.
_ASSIGNMENT = re.compile(rf"(?<![\w-])([A-Za-z_][\w.-]*)(=)({_VALUE})")
_SET = re.compile(rf"\b((?:set(?:\s+-[a-zA-Z]+)*|setenv)\s+)([A-Za-z_]\w*)(\s+)({_VALUE})")
_OPTION = re.compile(rf"(?<!\S)(--[A-Za-z][\w-]*)(=|\s+)({_VALUE})")
# "password": "..." in JSON, password: ... in YAML-ish text
_JSON_KEY = re.compile(r"""(["'])([A-Za-z_][\w.-]*)(\1\s*:\s*)("[^"]*"?|'[^']*'?|[^\s,'"}\]]+)""")
_YAML_KEY = re.compile(rf"(?<![\w-])([A-Za-z_][\w.-]*)(:\s+)({_VALUE})")
# mysql -pSECRET (the password glued to -p; a bare -p prompts for it, and -p 3306 is not mysql's)
_MYSQL = re.compile(r"\b(mysql\w*|mariadb\w*)\b")
_MYSQL_P = re.compile(r"(\s-p)(?!\s)([^\s]+)")


def redact(line: str) -> str:
    """``line`` with every secret replaced by ``«redacted»``."""
    if not line:
        return line
    line = _TOKEN_RE.sub(MARK, line)
    for pattern, replacement in _RULES:
        line = pattern.sub(replacement, line)
    line = _ASSIGNMENT.sub(_named_value, line)
    line = _SET.sub(_named_value, line)
    line = _OPTION.sub(_named_value, line)
    line = _JSON_KEY.sub(_named_value, line)
    line = _YAML_KEY.sub(_named_value, line)
    if _MYSQL.search(line):
        line = _MYSQL_P.sub(rf"\1{MARK}", line)
    return line


def _named_value(m: re.Match[str]) -> str:
    *head, value = m.groups()
    name, separator = head[-2].lstrip("-"), head[-1]
    if separator.isspace() and value.startswith("-"):
        return m.group(0)  # "--token --verbose": the next word is another option, not a value
    if not (_secret_name(name) and _literal(value) and MARK not in value):
        return m.group(0)
    quote = value[0] if value[0] in "'\"" else ""
    closed = quote if len(value) > 1 and value.endswith(quote) else ""
    return "".join(head) + quote + MARK + closed


def redact_history(lines: Iterable[str]) -> list[str]:
    return [redact(line) for line in lines]
