"""The CLI's socket clients: `exlsp status`, `plugins`, `suggest`, `chat`, `sessions`. They talk to
the running exlsp process and say plainly when none is running."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import msgspec

from . import wire
from .socket_client import Client, RequestFailed


def add_parsers(sub: Any) -> None:
    status = sub.add_parser("status", help="model, lanes, cache hit rate, tokens/s of the running exlsp")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    plugins = sub.add_parser("plugins", help="plugins of the running exlsp: enabled or blocked, and why")
    plugins.add_argument("--json", action="store_true", help="print a JSON list")
    suggest = sub.add_parser("suggest", help="complete a shell command line (never runs it)")
    suggest.add_argument("line", help="the partial command line, or a description with --describe")
    suggest.add_argument("--describe", action="store_true", help="turn a description into a command")
    suggest.add_argument("--shell", default=os.path.basename(os.environ.get("SHELL", "bash")) or "bash")
    suggest.add_argument("-n", "--candidates", type=int, default=3)
    suggest.add_argument("--json", action="store_true", help="print the socket's done message")
    chat = sub.add_parser("chat", help="ask the resident model; the answer streams")
    chat.add_argument("question", nargs="+")
    chat.add_argument("--max-tokens", type=int, default=512)
    chat.add_argument("--session", metavar="NAME", type=_session_name,
                      help="continue (or start) the saved conversation NAME (docs/chat-sessions.md)")
    sessions = sub.add_parser("sessions", help="saved chat sessions: list (default), show NAME, rm NAME")
    sessions.add_argument("action", nargs="?", choices=("list", "show", "rm"), default="list")
    sessions.add_argument("name", nargs="?", type=_session_name, help="the session, for show and rm")
    sessions.add_argument("-n", "--limit", type=int, default=50, help="list at most this many (default 50)")
    sessions.add_argument("--json", action="store_true", help="print the socket's done message")
    for p in (status, plugins, suggest, chat, sessions):
        p.add_argument("--socket", help="socket path (default: $EXLSP_SOCKET or the per-user default)")


def _session_name(text: str) -> str:
    if not wire_session_id(text):
        raise argparse.ArgumentTypeError(
            f"invalid session name {text[:40]!r}: 1-128 of letters, digits and _ . : @ + / = -"
        )
    return text


def wire_session_id(text: str) -> bool:
    """The socket's own validation of a session id (so the CLI and the server never disagree)."""
    try:
        msgspec.convert({"type": "session_delete", "id": 0, "session": text}, wire.Request)
    except msgspec.ValidationError:
        return False
    return True


def _client(args: argparse.Namespace) -> Client:
    return Client(args.socket, client="exlsp-cli", timeout=300)


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as c:
        status = c.status()
    if args.json:
        print(json.dumps(status))
        return 0
    lanes = ", ".join(f"{la['group']}:{la['tokens']}" for la in status.get("lanes", []))
    print(f"model       {status.get('model')} ({status.get('backend')}), loads: {status.get('model_loads')}")
    print(f"uptime      {status.get('uptime_s')} s")
    print(f"lanes       {lanes}")
    print(f"cache hits  {status.get('cache_hit_rate', 0):.1%} of prompt tokens reused")
    print(f"decode      {status.get('decode_tok_s')} tok/s, prefill {status.get('prefill_tok_s')} tok/s")
    print(f"jobs        {status.get('jobs_completed')} done, {status.get('jobs_cancelled')} cancelled, "
          f"{status.get('jobs_superseded')} superseded, {status.get('preemptions')} pre-empted")
    print(f"memory      {status.get('memory')}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    with _client(args) as c:
        plugins = c.status().get("plugins", [])
    if args.json:
        print(json.dumps(plugins))
        return 0
    for p in plugins:
        reason = f" — {p['reason']}" if p.get("reason") else ""
        print(f"{p['name']:<20} {p['status']:<9} {p['source']:<12} {p.get('version') or '':<8} "
              f"{','.join(h.removeprefix('exlsp_') for h in p['hooks'])}{reason}")
    return 0


def cmd_suggest(args: argparse.Namespace) -> int:
    with _client(args) as c:
        done = c.suggest(
            args.line,
            cursor=len(args.line),
            shell=args.shell,
            cwd=os.getcwd(),
            mode="describe" if args.describe else "complete",
            candidates=args.candidates,
        )
    if args.json:
        sys.stdout.write(wire.encode(done).decode())
        return 0
    if not done.suggestions:
        print("exlsp: no suggestion", file=sys.stderr)
        return 1
    best = done.suggestions[0]
    print(best.text)
    if best.risk != "low":
        print(f"exlsp: {best.risk} risk: {best.reason}", file=sys.stderr)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    def show(text: str) -> None:
        # Model output on a terminal: no escape sequences, whatever the model says.
        sys.stdout.write("".join(ch for ch in text if ch in "\n\t" or ch.isprintable()))
        sys.stdout.flush()

    with _client(args) as c:
        c.chat(" ".join(args.question), on_delta=show, max_tokens=args.max_tokens, session=args.session)
    sys.stdout.write("\n")
    return 0


def _clean(text: str) -> str:
    return "".join(ch for ch in text if ch in "\n\t" or ch.isprintable())


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def cmd_sessions(args: argparse.Namespace) -> int:
    if args.action != "list" and args.name is None:
        print(f"exlsp: sessions {args.action} needs a session NAME", file=sys.stderr)
        return 2
    with _client(args) as c:
        if args.action == "list":
            done = c.request(wire.SessionsRequest, limit=max(1, min(args.limit, 1000)))
        elif args.action == "rm":
            done = c.request(wire.SessionDeleteRequest, session=args.name)
        else:
            try:
                done = c.request(wire.SessionRequest, session=args.name)
            except RequestFailed as exc:
                if exc.code != wire.NOT_FOUND:
                    raise
                print(f"exlsp: no chat session {args.name!r}", file=sys.stderr)
                return 1
    if args.json:
        sys.stdout.write(wire.encode(done).decode())
        return 0
    if args.action == "list":
        for s in done.sessions or []:
            print(f"{s.id:<24} {_when(s.updated)}  {s.messages:>4} messages  {_clean(s.title)}")
        if not done.sessions:
            print("exlsp: no chat sessions yet (exlsp chat --session NAME \"question\")", file=sys.stderr)
        return 0
    if args.action == "rm":
        if not done.deleted:
            print(f"exlsp: no chat session {args.name!r}", file=sys.stderr)
            return 1
        print(f"deleted {args.name}")
        return 0
    for m in done.messages or []:
        cut = "" if m.complete else "  (cut short)"
        print(f"--- {m.role}, {_when(m.created)}{cut}\n{_clean(m.content)}")
    return 0


HANDLERS = {"status": cmd_status, "plugins": cmd_plugins, "suggest": cmd_suggest, "chat": cmd_chat,
            "sessions": cmd_sessions}
