"""Process-level faults of `exlsp daemon` and `exlsp serve`, as a user or a system meets them:
real subprocesses on the real default model, signals, a model file cut under a running process, the
socket directory removed, two daemons at once, a client killed mid-stream. docs/faults.md lists each
fault with its defined outcome and the test here that checks it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from exlsp.lsp.socket_client import Client
from exlsp.lsp.socket_paths import SocketInUse, claim_socket
from exlsp.runtime import ModelError, find_default_model, resolve_model

pytestmark = pytest.mark.model
ROOT = Path(__file__).resolve().parents[1]
EXLSP = [sys.executable, "-m", "exlsp"]
LONG_CHAT = {"messages": [{"role": "user", "content": "Write a very long story about a dragon."}], "max_tokens": 1500}
PROMPT = "def add(a, b):\n    return"
# One llama.cpp thread: on a busy 2-core machine two spin on each other, and one token can take seconds.
ONE_THREAD = ("--threads", "1")


def _default_sigint() -> None:
    # A test run in a background job inherits an ignored SIGINT; the user's terminal does not.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Proc:
    """An exlsp subprocess whose stderr is collected by a thread, to wait on without blocking."""

    def __init__(self, *args: str, env: dict[str, str], stdin: int = subprocess.DEVNULL) -> None:
        self.proc = subprocess.Popen(
            [*EXLSP, *args], stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            cwd=ROOT, env=env, preexec_fn=_default_sigint,
        )
        self._err = bytearray()
        self._lock = threading.Lock()
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        while chunk := os.read(self.proc.stderr.fileno(), 65536):
            with self._lock:
                self._err += chunk

    @property
    def err(self) -> str:
        with self._lock:
            return self._err.decode("utf-8", "replace")

    def wait_err(self, text: str, timeout: float = 60) -> None:
        wait_for(lambda: text in self.err or self.proc.poll() is not None, timeout)
        assert text in self.err, self.err[-2000:]

    def wait(self, timeout: float) -> tuple[int, float]:
        """The exit code and how long it took."""
        t0 = time.monotonic()
        code = self.proc.wait(timeout)
        return code, time.monotonic() - t0

    def lines(self) -> list[str]:
        """Every non-empty stderr line, once the process has exited."""
        self.wait(5)
        self._drainer.join(5)  # up to EOF: -v writes a lot
        return [line for line in self.err.replace("\r", "\n").splitlines() if line.strip()]

    def last_line(self) -> str:
        return self.lines()[-1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for(predicate: Callable[[], Any], timeout: float, step: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(step)
    return predicate()


def env_for(d: Path) -> dict[str, str]:
    xdg = {f"XDG_{name}_HOME": str(d / name.lower()) for name in ("CONFIG", "DATA", "STATE", "CACHE")}
    return {**os.environ, **xdg, "XDG_RUNTIME_DIR": str(d)}


@pytest.fixture
def workdir():
    # Short: AF_UNIX paths hold ~104 bytes, and pytest's tmp_path can be longer.
    d = Path(tempfile.mkdtemp(prefix="exf-", dir="/tmp"))
    procs: list[Proc] = []
    yield d, procs
    for p in procs:
        p.stop()
    shutil.rmtree(d, ignore_errors=True)


def start(workdir, *args: str, stdin: int = subprocess.DEVNULL) -> tuple[Proc, Path]:
    d, procs = workdir
    sock = d / "run" / "exlsp.sock"
    proc = Proc(*args, *ONE_THREAD, "--socket", str(sock), env=env_for(d), stdin=stdin)
    procs.append(proc)
    return proc, sock


def leftovers(sock: Path) -> list[str]:
    """What a stopped server left in its socket directory (sockets, lock files)."""
    return sorted(os.listdir(sock.parent)) if sock.parent.exists() else []


def open_chat(sock: Path) -> tuple[socket.socket, Any]:
    """A raw client streaming a long chat; returns once three deltas have arrived."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(os.fspath(sock))
    s.sendall(json.dumps({"type": "chat", "id": 1, **LONG_CHAT}).encode() + b"\n")
    f = s.makefile("rb")
    for _ in range(3):
        assert json.loads(f.readline())["type"] == "delta"
    return s, f


def read_to_end(f: Any, timeout: float) -> list[dict]:
    """Every reply up to EOF; fails (socket timeout) if the server leaves the client hanging."""
    replies = []
    t0 = time.monotonic()
    while line := f.readline():
        replies.append(json.loads(line))
        assert time.monotonic() - t0 < timeout
    return replies


# ---- 1. signals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "sig", "loading"),
    [
        ("daemon", signal.SIGTERM, "loading SmolLM2"),  # the progress bar
        ("daemon", signal.SIGINT, "loading SmolLM2"),
        ("serve", signal.SIGTERM, "llama.cpp: "),  # serve has no bar: its -v log of the load
    ],
)
def test_signal_during_model_load_exits_at_once(workdir, command, sig, loading):
    extra = ("--no-demo",) if command == "daemon" else ("-v",)
    proc, sock = start(workdir, command, *extra, stdin=subprocess.PIPE)
    proc.wait_err(loading)
    proc.proc.send_signal(sig)
    code, took = proc.wait(15)
    assert code == 128 + sig and took < 10, proc.err[-2000:]
    message = f"exlsp: interrupted by {sig.name} while loading the model"
    # With -v the load thread may still log a line after it, until the process is gone.
    assert (proc.last_line() == message) if command == "daemon" else (message in proc.lines())
    assert "Traceback" not in proc.err and "Fatal Python error" not in proc.err
    assert leftovers(sock) == []  # the daemon's early claim is undone: no socket, no lock file


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_daemon_signal_during_a_generation_stops_cleanly(workdir, sig):
    proc, sock = start(workdir, "daemon", "--no-demo")
    proc.wait_err("press Ctrl-C")
    assert leftovers(sock) == ["exlsp.sock", "exlsp.sock.lock", "lsp.sock", "lsp.sock.lock"]
    s, f = open_chat(sock)
    with s:
        proc.proc.send_signal(sig)
        replies = read_to_end(f, timeout=10)  # a clean EOF (or a terminal reply), never a hang
    assert all(r["type"] in ("delta", "done", "error", "cancelled") for r in replies)
    code, took = proc.wait(15)
    # Bounded by the engine's join (10 s): one token's decode on a loaded 2-core machine can take seconds.
    assert code == 0 and took < 10, proc.err[-2000:]
    assert proc.last_line() == f"exlsp: stopped ({sig.name})"
    assert "Traceback" not in proc.err
    assert leftovers(sock) == []


def test_serve_sigterm_while_resident_stops_cleanly(workdir):
    """Used to abort (SIGABRT, "Fatal Python error") on the stdin reader thread at interpreter exit."""
    proc, sock = start(workdir, "serve", stdin=subprocess.PIPE)  # stdin stays open: the editor is there
    assert wait_for(lambda: (sock.parent / "lsp.sock").is_socket(), 60), proc.err[-2000:]
    s, f = open_chat(sock)
    with s:
        proc.proc.send_signal(signal.SIGTERM)
        read_to_end(f, timeout=10)
    code, took = proc.wait(15)
    assert code == 0 and took < 10, proc.err[-2000:]
    assert proc.last_line() == "exlsp: stopped (SIGTERM)"
    assert "Fatal Python error" not in proc.err and "Traceback" not in proc.err
    assert leftovers(sock) == []


# ---- one resident daemon on a copy of the model, for the faults it survives ----------------------------


@pytest.fixture(scope="module")
def resident():
    d = Path(tempfile.mkdtemp(prefix="exr-", dir="/tmp"))
    model = d / "model.gguf"
    shutil.copyfile(find_default_model(), model)
    sock = d / "run" / "exlsp.sock"
    proc = Proc("daemon", "--no-demo", *ONE_THREAD, "--model", str(model), "--socket", str(sock), env=env_for(d))
    try:
        proc.wait_err("press Ctrl-C")
        yield proc, sock, model
    finally:
        proc.stop()
        shutil.rmtree(d, ignore_errors=True)


def complete(sock: Path, prompt: str = PROMPT) -> str:
    with Client(sock, timeout=30) as c:
        return c.complete(prompt, max_tokens=8).text


def test_model_file_truncated_then_deleted_under_the_resident_model(resident):
    proc, sock, model = resident
    before = complete(sock)
    os.truncate(model, 1000)  # in place, as `cp new.gguf model.gguf` or a new download does
    assert complete(sock) == before  # an mmap-ed model died here of SIGBUS
    model.unlink()
    assert complete(sock) == before
    assert proc.proc.poll() is None


@pytest.mark.parametrize("command", ["daemon", "serve"])
@pytest.mark.parametrize("fault", ["truncated", "missing"])
def test_new_process_refuses_a_truncated_or_missing_model(workdir, command, fault):
    d, _ = workdir
    model = d / "cut.gguf"
    if fault == "truncated":
        with find_default_model().open("rb") as f:
            model.write_bytes(f.read(3_000_000))
    proc, sock = start(workdir, command, "--model", str(model))
    code, _ = proc.wait(30)
    assert code == 2
    line = proc.last_line()
    assert proc.err.strip() == line and str(model) in line  # one line, naming the file
    expected = "the model file is truncated" if fault == "truncated" else "model not found"
    assert line.startswith(f"exlsp: error: {expected}"), line
    assert "loading" not in proc.err and leftovers(sock) == []  # refused before any load or socket


def test_gguf_header_gives_the_exact_file_size(workdir):
    """The truncation check reads the real model's header to exactly its size: the whole file passes,
    one byte less does not."""
    d, _ = workdir
    size = find_default_model().stat().st_size
    cut = d / "short.gguf"
    with find_default_model().open("rb") as f:
        cut.write_bytes(f.read(size - 1))
    with pytest.raises(ModelError, match=f"has {size - 1} bytes, its GGUF header needs {size} "):
        resolve_model(cut)
    assert resolve_model(find_default_model()).backend == "llamacpp"


# ---- 3. the socket directory removed ----------------------------------------------------------------


def test_socket_directory_removed_is_created_again(resident):
    proc, sock, _ = resident
    with Client(sock, timeout=30) as old:  # connected before: keeps working throughout
        shutil.rmtree(sock.parent)
        assert wait_for(lambda: sock.is_socket() and (sock.parent / "lsp.sock").is_socket(), 10, step=0.05)
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700 and stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert complete(sock)  # a new client reaches the daemon again
        assert old.status()["model"] == "model"
    proc.wait_err(f"the socket {sock} was removed or replaced; creating it again")


def test_socket_path_taken_meanwhile_is_left_alone_until_free(resident):
    proc, sock, _ = resident
    with Client(sock, timeout=30) as old:
        for _ in range(5):  # another process takes the path before the daemon looks again (1 s)
            shutil.rmtree(sock.parent)
            try:
                ours = claim_socket(sock)
                break
            except SocketInUse:  # the daemon was quicker this time
                continue
        try:
            proc.wait_err(f"another exlsp owns {sock} (pid {os.getpid()})", timeout=10)
            assert ours.is_intact()  # never taken from us
            assert old.status()["model"] == "model"
        finally:
            ours.release()
        assert wait_for(sock.is_socket, 10, step=0.05)  # free again: the daemon takes it back
        assert complete(sock)


# ---- 4. two daemons at once ---------------------------------------------------------------------


def test_two_daemons_at_once_one_serves_the_other_leaves_before_loading(workdir):
    a, sock = start(workdir, "daemon", "--no-demo")
    b, _ = start(workdir, "daemon", "--no-demo")
    loser = wait_for(lambda: next((p for p in (a, b) if p.proc.poll() is not None), None), 30)
    assert loser is not None, (a.err, b.err)
    winner = b if loser is a else a
    assert loser.proc.returncode == 2
    line = loser.last_line()
    assert line.startswith(f"exlsp: error: another exlsp owns {sock} (pid {winner.proc.pid})"), line
    assert "loading" not in loser.err  # it failed fast, before loading the model
    winner.wait_err("press Ctrl-C")
    assert complete(sock)
    assert winner.proc.poll() is None


# ---- 5. a client killed mid-stream ------------------------------------------------------------------


def test_client_killed_mid_stream_cancels_its_job(resident):
    _, sock, _ = resident
    with Client(sock) as c:
        cancelled = c.status()["jobs_cancelled"]
    chat = subprocess.Popen(
        [*EXLSP, "chat", "--socket", str(sock), "--max-tokens", "1500", LONG_CHAT["messages"][0]["content"]],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
    )
    try:
        assert chat.stdout is not None
        assert len(os.read(chat.stdout.fileno(), 4096)) > 0  # the answer is streaming
        chat.kill()
        chat.wait(5)
    finally:
        if chat.poll() is None:
            chat.kill()
            chat.wait()

    def idle() -> dict | None:
        with Client(sock) as c:
            s = c.status()
        quiet = s["running"] is None and s["queued"] == 0 and s["socket"]["requests_in_flight"] == 0
        return s if quiet and s["jobs_cancelled"] == cancelled + 1 else None

    assert wait_for(idle, 10, step=0.05), "the killed client's job is still running"
    assert complete(sock)  # the next client is served
