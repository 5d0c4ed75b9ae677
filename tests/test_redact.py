"""Secrets in shell history are redacted before a prompt sees them; ordinary commands are not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exlsp.plugins.redact import MARK, redact, redact_history

R = MARK

SECRETS = [
    ("export GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789", f"export GITHUB_TOKEN={R}"),
    ("gh auth login --with-token github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuv", f"gh auth login --with-token {R}"),
    ("aws configure set aws_access_key_id AKIAIOSFODNN7EXAMPLE", f"aws configure set aws_access_key_id {R}"),
    ("export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", f"export AWS_SECRET_ACCESS_KEY={R}"),
    ('export OPENAI_API_KEY="sk-proj-abcdefghijklmnopqrstuvwxyz012345"', f'export OPENAI_API_KEY="{R}"'),
    ("echo sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123 | pbcopy", f"echo {R} | pbcopy"),
    ("SLACK_BOT=xoxb-1234567890-abcdefghijkl node bot.js", f"SLACK_BOT={R} node bot.js"),
    (
        'curl -H "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijklmnop" https://api',
        f'curl -H "Authorization: Bearer {R}" https://api',
    ),
    ("curl -H 'Authorization: token abc123def456ghi789' https://api", f"curl -H 'Authorization: token {R}' https://api"),
    ("curl -H 'X-Api-Key: 0123456789abcdef' https://api", f"curl -H 'X-Api-Key: {R}' https://api"),
    ("jwt decode eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXZhbHVl", f"jwt decode {R}"),
    ("mysql -u root -pS3cret! shop", f"mysql -u root -p{R} shop"),
    ("mysqldump --password=S3cret shop > shop.sql", f"mysqldump --password={R} shop > shop.sql"),
    ("psql postgres://bob:hunter2@db.example.com/app", f"psql postgres://bob:{R}@db.example.com/app"),
    ("git clone https://oauth2:glpat-abcdefghijklmnopqrstu@gitlab.com/x/y.git", f"git clone https://oauth2:{R}@gitlab.com/x/y.git"),
    ("PGPASSWORD=hunter2 psql -h db", f"PGPASSWORD={R} psql -h db"),
    ("vault login --password hunter2", f"vault login --password {R}"),
    ("app --api-key=abcd1234 --verbose", f"app --api-key={R} --verbose"),
    ("export DB_PASSWORD='correct horse battery'", f"export DB_PASSWORD='{R}'"),
    ("export STRIPE_KEY=sk_live_abcdefghijklmnop1234", f"export STRIPE_KEY={R}"),
    ("set -gx HF_TOKEN hf_abcdefghijklmnopqrstuvwxyzABCDEF", f"set -gx HF_TOKEN {R}"),
    ("setenv API_SECRET s3cr3t", f"setenv API_SECRET {R}"),
    ("curl -u admin:s3cret https://x/api", f"curl -u admin:{R} https://x/api"),
    ("curl -d '{\"user\":\"bob\",\"password\":\"hunter2\"}' https://x/login", f"curl -d '{{\"user\":\"bob\",\"password\":\"{R}\"}}' https://x/login"),
    ("sshpass -p hunter2 ssh host", f"sshpass -p {R} ssh host"),
    ("SECRET_KEY_BASE=abcdef0123 rails server", f"SECRET_KEY_BASE={R} rails server"),
    ("https://example.com/cb?code=1&access_token=abc123def", f"https://example.com/cb?code=1&access_token={R}"),
    (
        "printf '%s' '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----' > k",
        f"printf '%s' '{R}' > k",
    ),
]

ORDINARY = [
    'git commit -m "fix password field"',
    'git commit -m "rotate token handling, see SECRET docs"',
    "kubectl get secrets -n prod",
    "grep -rn password src/",
    "python gen.py --max-tokens 64 --temperature 0.2",
    "python gen.py max_tokens=64 tokenizer=bpe",
    "export PATH=$PATH:~/bin",
    "export EDITOR=vim",
    "export GITHUB_TOKEN=$(gh auth token)",
    'export API_KEY="$API_KEY_FROM_VAULT"',
    "mysql -u root -p shop",
    "docker run -p 8080:80 nginx",
    "ssh user@host",
    "scp notes.txt user@host:/tmp/",
    "pip install git+https://github.com/x/y@main",
    "ssh-keygen -t ed25519 -f ~/.ssh/id_ed25519",
    "app --password-file ~/.config/app/pw",
    "git checkout sk-learn-feature-branch-name",
    "passthrough=1 make",
    "pass show email/work",
    "openssl genrsa -out key.pem 2048",
    "curl https://example.com/?page=2&sort=desc",
    "",
]


@pytest.mark.parametrize(("line", "expected"), SECRETS, ids=[s[:40] for s, _ in SECRETS])
def test_secrets_are_redacted(line, expected):
    assert redact(line) == expected


@pytest.mark.parametrize("line", ORDINARY)
def test_ordinary_commands_are_kept(line):
    assert redact(line) == line


def test_enough_cases():
    assert len(SECRETS) >= 15 and len(ORDINARY) >= 15


def test_redact_history_keeps_order_and_length():
    lines = ["ls", "export GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789", "git status"]
    assert redact_history(lines) == ["ls", f"export GITHUB_TOKEN={R}", "git status"]


@given(st.text(max_size=300))
def test_redact_is_idempotent(text):
    once = redact(text)
    assert redact(once) == once


@given(st.sampled_from([s for s, _ in SECRETS]), st.sampled_from(["ls; ", "cd src && ", "true || ", "echo x | ", "  "]))
def test_secrets_are_redacted_after_other_commands(line, before):
    assert redact(before + line) == before + redact(line)
