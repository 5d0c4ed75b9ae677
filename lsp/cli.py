"""The `exlsp` command line. Errors the user can fix end in one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from exlsp import __version__
from exlsp.runtime import (
    BackendConfig,
    Delta,
    Engine,
    ExlspError,
    GenerationRequest,
    ModelSpec,
    Priority,
    resolve_model,
)
from exlsp.runtime import bench_gpu
from exlsp.runtime import load_engine as _load_engine

from . import bench_http, bench_load, bench_shell, cli_clients, shell_setup

if TYPE_CHECKING:
    from .socket_paths import ClaimedSocket

log = logging.getLogger("exlsp")

DEMO_PROMPT = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if n'


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="PATH", help="a .gguf file (llama.cpp) or a model directory (ExLlamaV2)")
    p.add_argument("--backend", choices=("auto", "exllamav2", "llamacpp"), default="auto")
    p.add_argument("--lanes", type=int, default=4, help="KV cache lanes (default 4)")
    p.add_argument("--ctx", type=int, default=4096, help="context tokens per lane (default 4096)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for llama.cpp (default: all)")
    p.add_argument("--socket", help="Unix socket path (default: $EXLSP_SOCKET or the per-user default)")
    p.add_argument("--config", type=Path, help="config file (default: $XDG_CONFIG_HOME/exlsp/config.toml)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exlsp", description="One resident local LLM for editors and shells.")
    parser.add_argument("--version", action="version", version=f"exlsp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    daemon = sub.add_parser("daemon", help="load the model, show a live demo, and keep it resident until Ctrl-C")
    _add_model_options(daemon)
    daemon.add_argument("--no-demo", action="store_true", help="skip the start-up demonstration")
    daemon.add_argument("--http", metavar="HOST:PORT", help="also serve the OpenAI/Ollama HTTP API (docs/http.md)")
    daemon.add_argument("--http-token", metavar="TOKEN", default=os.environ.get("EXLSP_HTTP_TOKEN"),
                        help="bearer token the HTTP API requires (needed for a non-loopback bind)")

    serve = sub.add_parser("serve", help="the language server on stdio (what editors launch)")
    _add_model_options(serve)
    serve.add_argument("--no-attach", action="store_true", help="load the model even if a running exlsp has it")
    # Some clients (vscode-languageclient with TransportKind.stdio) append --stdio: it is the default.
    serve.add_argument("--stdio", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--keep-alive", type=float, default=5.0,
                       help="seconds to keep serving attached editors after the last one leaves (default 5)")

    cli_clients.add_parsers(sub)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    typing_ = bench_sub.add_parser("typing", help="replay typing a file: KV lanes vs no reuse")
    _add_model_options(typing_)
    typing_.add_argument("--file", required=True, type=Path, help="a real source file to type")
    typing_.add_argument("--start-line", type=int, default=None, help="line to type at (default: the middle)")
    typing_.add_argument("--chars", type=int, default=48, help="characters to type (default 48)")
    typing_.add_argument("--budget", type=int, default=1024, help="prompt budget in tokens (default 1024)")
    typing_.add_argument("--max-tokens", type=int, default=16, help="tokens per completion (default 16)")
    typing_.add_argument("--json", action="store_true", help="print one JSON object")
    typing_.add_argument("--out", type=Path, help="also write the JSON to this file")
    lsp_bench = bench_sub.add_parser("lsp", help="the typing replay through the language server")
    _add_model_options(lsp_bench)
    for name, default in (("--start-line", None), ("--chars", 48), ("--budget", 1024), ("--max-tokens", 16)):
        lsp_bench.add_argument(name, type=int, default=default)
    lsp_bench.add_argument("--file", required=True, type=Path)
    lsp_bench.add_argument("--json", action="store_true")
    lsp_bench.add_argument("--out", type=Path)
    bench_shell.add_parser(bench_sub)
    bench_http.add_parser(bench_sub)
    bench_load.add_parser(bench_sub)
    bench_gpu.add_parser(bench_sub)
    shell_setup.add_parser(sub)
    return parser


class LoadProgress:
    """A one-line progress display on stderr (never stdout: stdout may carry a protocol)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.t0 = time.perf_counter()
        self._last = -1
        self._lock = threading.Lock()  # called from the load thread
        self._silent = False

    def __call__(self, fraction: float) -> None:
        pct = int(fraction * 100)
        with self._lock:
            if not self._silent and pct != self._last and (pct - self._last >= 5 or pct == 100):
                self._last = pct
                bar = "#" * (pct // 5)
                sys.stderr.write(f"\r{self.label} [{bar:<20}] {pct:3d}%")
                sys.stderr.flush()

    def silence(self) -> None:
        """No more output, from now on: an interrupted load must not draw after the last word."""
        with self._lock:
            self._silent = True

    def done(self) -> None:
        sys.stderr.write(f"\r{self.label} [{'#' * 20}] 100%  ({time.perf_counter() - self.t0:.1f} s)\n")
        sys.stderr.flush()


def load_engine_from_args(
    args: argparse.Namespace, lane_groups: dict[str, int] | None = None, spec: ModelSpec | None = None
) -> Engine:
    spec = spec or resolve_model(args.model, args.backend)
    progress = LoadProgress(f"loading {spec.name} ({spec.backend})")
    config = BackendConfig(n_lanes=args.lanes, n_ctx=args.ctx, n_threads=args.threads)
    if lane_groups is None:
        lane_groups = default_lane_groups(args.lanes)
    try:
        engine = load_in_thread(lambda: _load_engine(spec, config, lane_groups=lane_groups, progress=progress))
    except KeyboardInterrupt:
        progress.silence()
        raise
    progress.done()
    return engine


def load_in_thread(load: Callable[[], Engine]) -> Engine:
    """Run a model load in a worker thread while the main thread waits for it.

    A signal's Python handler runs in the main thread, between two bytecodes: during a load in the
    main thread that is inside one of llama.cpp's ctypes callbacks (progress, log), where ctypes
    swallows the exception — the SIGTERM is lost and the load, and the process, go on. Waiting on
    an event, the main thread takes the signal at once; the ``Interrupted`` it raises is marked
    ``during_load``, and ``main`` then ends the process without waiting for the thread."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["engine"] = load()
        except BaseException as exc:  # handed to the main thread
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name="exlsp-load", daemon=True).start()
    try:
        done.wait()
    except KeyboardInterrupt as exc:
        exc.during_load = True  # type: ignore[attr-defined]
        raise
    if "error" in box:
        raise box["error"]
    return box["engine"]


def default_lane_groups(n: int) -> dict[str, int]:
    """Chat and shell get a lane each so they never evict the completion lanes."""
    if n >= 4:
        return {"completion": n - 2, "shell": 1, "chat": 1}
    if n == 3:
        return {"completion": 2, "chat": 1}
    return {"completion": n}


def _describe(final: Any) -> str:
    return (
        f"prompt {final.prompt_tokens} tokens: {final.reused_tokens} reused, {final.prefilled_tokens} prefilled; "
        f"first token {final.ttft_ms:.0f} ms; {final.generated_tokens} tokens at {final.decode_tok_s:.0f} tok/s"
    )


async def demo(engine: Engine, out=sys.stdout) -> None:
    """One completion streamed live, then the same prompt one keystroke later to show reuse."""
    out.write(f"--- demo: completing with {engine.backend.model_name} ---\n{DEMO_PROMPT}")
    out.flush()
    request = dict(max_tokens=48, priority=Priority.INLINE, lane_group="completion", stop=["\n\n", "\ndef "])
    stream = await engine.generate(GenerationRequest(prompt=DEMO_PROMPT, **request))
    async for event in stream:
        if isinstance(event, Delta):
            out.write(event.text)
            out.flush()
    first = stream.final
    out.write(f"\n--- cold cache: {_describe(first)}\n")
    # The user accepts the first suggested line; the next request reuses the lane.
    typed = DEMO_PROMPT + first.text.split("\n", 1)[0] + "\n"
    again = await engine.complete(GenerationRequest(prompt=typed, **request))
    out.write(f"--- accepted the first line, asked again:\n{typed}{again.text}\n")
    out.write(f"--- warm lane: {_describe(again)}\n")
    s = engine.status()
    out.write(f"--- cache: hit rate {s['cache_hit_rate']:.0%}, lanes {[la['tokens'] for la in s['lanes']]}\n")
    out.flush()


def load_plugins(args: argparse.Namespace):
    """The plugin manager, from the config file (invalid settings: defaults and a warning)."""
    from exlsp.plugins.manager import PluginManager
    from exlsp.plugins.settings import load_config

    config = load_config(args.config)
    for warning in config.warnings:
        log.warning("%s", warning)
    plugins = PluginManager(
        local_dirs=config.plugins_dirs,
        allow=config.plugins_allow,
        block=config.plugins_block,
        settings=config.plugin_settings,
    )
    plugins.load()
    return plugins, config


def cmd_daemon(args: argparse.Namespace) -> int:
    import anyio

    from exlsp.plugins.assistant import Assistant
    from exlsp.plugins.chat_sessions import ChatSessions

    from .owner import Owner
    from .socket_paths import resolve_socket_path

    spec = resolve_model(args.model, args.backend)  # a bad or truncated model fails first, in a blink
    socket_path = resolve_socket_path(args.socket)
    http = None
    if args.http:
        from .http_api import check_bind

        host, _, port = args.http.rpartition(":")
        host = host or "127.0.0.1"
        if not port.isdigit():
            raise ExlspError(f"--http wants HOST:PORT, got {args.http!r}")
        check_bind(host, args.http_token)  # a bad bind fails before the model loads
        http = (host, int(port))
    plugins, _ = load_plugins(args)
    claimed = claim_before_loading(socket_path)
    try:
        lane_groups = None
        if http is not None:  # the HTTP API gets a lane of its own, added to the others
            args.lanes += 1
            lane_groups = {**default_lane_groups(args.lanes - 1), "http": 1}
        engine = load_engine_from_args(args, lane_groups, spec=spec)
        assistant = Assistant(engine, plugins)
        sessions = ChatSessions.default()  # opens its file at the first session request
    except BaseException:
        if claimed is not None:
            claimed.release()
        raise
    stopped_by: list[int] = []

    async def main() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:
                tg.start_soon(cancel_on_signal, signals, tg.cancel_scope, stopped_by)
                owner = Owner(assistant, plugins, socket_path, sessions, claimed)
                await owner.start(tg)
                if http is not None:
                    from .http_api import make_app, serve_http

                    app = make_app(assistant, token=args.http_token)
                    port = await tg.start(functools.partial(serve_http, app, http[0], http[1], token=args.http_token))
                    sys.stderr.write(f"exlsp: HTTP API on http://{http[0]}:{port}\n")
                if not args.no_demo:
                    await demo(engine)
                where = f"socket {socket_path}" if owner.socket else f"no socket: {owner.socket_error}"
                sys.stderr.write(f"exlsp: model resident ({where}); press Ctrl-C to stop\n")
                sys.stderr.flush()
                await anyio.sleep_forever()  # until cancel_on_signal

    try:
        anyio.run(main)
    except KeyboardInterrupt as exc:  # a signal just before the event loop took them over
        stopped_by.append(getattr(exc, "signum", signal.SIGINT))
    finally:
        sessions.store.close()
        engine.close()  # cancels a running generation; its client has already seen its socket close
        if claimed is not None:
            claimed.release()  # done by the socket server already, unless it never started
    sys.stderr.write(f"exlsp: stopped ({signal_name(stopped_by[0] if stopped_by else signal.SIGINT)})\n")
    return 0


def claim_before_loading(socket_path: Path) -> ClaimedSocket | None:
    """Claim the daemon's socket before its model loads: a second daemon on the same socket fails
    here in a second, naming the owner's pid, not after loading a model it could never serve.
    Other socket trouble is only reported once loaded (the HTTP API may still serve)."""
    from .socket_paths import SocketInUse, SocketSetupError, claim_socket

    try:
        return claim_socket(socket_path)
    except SocketInUse:
        raise
    except SocketSetupError:
        return None


async def cancel_on_signal(signals: Any, scope: Any, received: list[int], on_signal: Callable[[int], None] | None = None) -> None:
    """Wait for the first SIGINT/SIGTERM, note it, and cancel ``scope``: everything in it shuts
    down in order (connections closed, socket and lock files removed)."""
    async for signum in signals:
        received.append(int(signum))
        if on_signal is not None:
            on_signal(int(signum))
        scope.cancel()
        return


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def cmd_serve(args: argparse.Namespace) -> int:
    import anyio

    from .attach import find_owner, relay
    from .owner import Owner
    from .serve import protect_stdout, quiet_protocol_tracebacks, serve_stdio
    from .socket_paths import resolve_socket_path

    spec = resolve_model(args.model, args.backend)  # a bad path fails here, before any protocol
    proto_out = protect_stdout()
    quiet_protocol_tracebacks()
    socket_path = resolve_socket_path(args.socket)
    owner_lsp = None if args.no_attach else find_owner(socket_path, spec.name)
    if owner_lsp is not None:
        log.info("attaching to the exlsp process that owns %s (%s)", spec.name, owner_lsp)
        try:
            code = relay(owner_lsp, sys.stdin.buffer, proto_out)
        except KeyboardInterrupt as exc:
            sys.stderr.write(f"exlsp: stopped ({signal_name(getattr(exc, 'signum', signal.SIGINT))})\n")
            code = 0
        # The stdin reader thread may still sit in a read; a normal interpreter exit would abort
        # on its buffer lock. Nothing else is left to clean up in a relay.
        sys.stderr.flush()
        os._exit(code)
    from exlsp.plugins.chat_sessions import ChatSessions

    plugins, config = load_plugins(args)
    backend_config = BackendConfig(n_lanes=args.lanes, n_ctx=args.ctx, n_threads=args.threads)
    stdin = sys.stdin.buffer
    sessions = ChatSessions.default()  # one store for this process: stdio and attached editors
    owners: list[Any] = []  # made once the model is loaded; they claim the sockets then
    stopped_by: list[int] = []

    def make_owner(assistant: Any) -> Any:
        owners.append(Owner(assistant, plugins, socket_path, sessions))
        return owners[-1]

    def on_signal(signum: int) -> None:
        if not owners:  # still loading: nothing is claimed, and the load need not finish first
            exit_now(f"exlsp: interrupted by {signal_name(signum)} while loading the model", 128 + signum)

    async def main() -> int:
        code = 1
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:
                tg.start_soon(cancel_on_signal, signals, tg.cancel_scope, stopped_by, on_signal)
                code = await serve_language_server()
                tg.cancel_scope.cancel()
        return code

    async def serve_language_server() -> int:
        return await serve_stdio(
            spec,
            backend_config,
            default_lane_groups(args.lanes),
            plugins,
            proto_out=proto_out,
            stdin=stdin,
            file_settings=config.raw.get("lsp", {}) if isinstance(config.raw.get("lsp"), dict) else {},
            owner_factory=make_owner,
            keep_alive_s=args.keep_alive,
            sessions=sessions,
        )

    code = anyio.run(main)
    if stopped_by:  # the sockets are gone; the stdin reader thread may sit in a read (see above)
        exit_now(f"exlsp: stopped ({signal_name(stopped_by[0])})", 0)
    return code


def cmd_bench(args: argparse.Namespace) -> int:
    import anyio

    if args.bench == "shell":
        return bench_shell.run(args)
    if args.bench == "http":
        return bench_http.run(args)
    if args.bench == "load":
        return bench_load.run(args)
    if args.bench == "gpu":
        return bench_gpu.run(args)

    from exlsp.runtime.bench_typing import TypingReplay, run_typing_bench

    if not args.file.is_file():
        raise ExlspError(f"file not found: {args.file}")
    replay = TypingReplay.from_file(args.file, args.start_line, args.chars, args.budget)
    engine = load_engine_from_args(args, lane_groups={"completion": max(1, args.lanes - 1), "chat": 1})
    try:
        if args.bench == "lsp":
            from .bench_lsp import run

            result = run(engine, replay, args.max_tokens, str(args.file))
        else:
            result = anyio.run(
                lambda: run_typing_bench(engine, replay, max_tokens=args.max_tokens, file=str(args.file))
            )
    finally:
        engine.close()
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.json:
        print(text)
    else:
        for mode, m in result["modes"].items():
            print(
                f"{mode:>9}: ttft p50 {m.get('ttft_p50_ms')} ms p95 {m.get('ttft_p95_ms')} ms, "
                f"prefill {m.get('prefill_tokens_mean')} / prompt {m.get('prompt_tokens_mean')} tokens"
            )
        print(f"   ratios: {result['ratios']}")
    return 0


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM while no event loop handles them (start-up, the model load)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def exit_now(message: str, code: int) -> None:
    """End the process at once (``os._exit``): for when a thread is still inside native code (a
    model load) or in a blocking read of stdin, which a normal interpreter exit would wait for or
    abort on. Whatever must be cleaned up is cleaned up before this."""
    sys.stderr.write(f"\n{message}\n" if message else "")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM and SIGINT before an event loop takes them over (e.g. during a model load) end as
    # cleanly as Ctrl-C, and say which signal it was. An ignored SIGINT (a background job) stays so.
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _terminate_as_interrupt)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handlers = {"daemon": cmd_daemon, "serve": cmd_serve, "bench": cmd_bench, "shell-init": shell_setup.run, **cli_clients.HANDLERS}
    try:
        return handlers[args.command](args)
    except ExlspError as exc:
        sys.stderr.write(f"exlsp: error: {exc}\n")
        return 2
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        message = f"exlsp: interrupted by {signal_name(signum)}"
        if getattr(exc, "during_load", False):  # the load thread is still in the backend
            exit_now(f"{message} while loading the model", 128 + signum)
        sys.stderr.write(f"\n{message}\n")
        return 128 + signum
