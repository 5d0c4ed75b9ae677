"""Where the Unix socket lives, and claiming it safely.

Path: ``$EXLSP_SOCKET`` if set, else ``$XDG_RUNTIME_DIR/exlsp/exlsp.sock``, else
``${TMPDIR:-/tmp}/exlsp-$UID/exlsp.sock``. Server and clients resolve it with the same function.

The two default directories are exlsp's own: created 0700, and one that is not ours (someone
pre-created ``/tmp/exlsp-1000`` to listen in) is refused; one that is ours but too open is
repaired. A directory the user named through ``$EXLSP_SOCKET`` (it may be ``~``) is never chmod-ed:
only missing parents are created, 0700. The socket itself is 0600 and the server also checks the
peer's uid, so it is safe in a shared parent too.

Claiming: an ``flock`` on ``<socket>.lock`` decides which process owns the path, so two servers
starting together cannot both "replace the stale socket" and orphan one another. Under the lock, a
socket file that nobody answers is stale and replaced; one that answers is never stolen. The owner
writes its pid into the lock file, so the loser can say who owns the path. On release the owner
removes the socket and the lock file; a process that locked a lock file just as it was removed
finds it is no longer the one at the path and tries again, so the removal cannot let two owners in.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from exlsp.runtime.errors import ExlspError

log = logging.getLogger(__name__)

SOCKET_NAME = "exlsp.sock"
# sun_path holds 108 bytes on Linux (104 on macOS), the terminating NUL included.
MAX_PATH_BYTES = 103


class SocketSetupError(ExlspError):
    """The socket cannot be created at its path (a directory not ours, a path too long ...)."""


class SocketInUse(SocketSetupError):
    """A live process already serves the socket path: it is never taken over."""


def default_socket_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    runtime_dir = env.get("XDG_RUNTIME_DIR", "")
    # The XDG spec says to ignore a relative value; a missing one (sudo -E, su) is as good as unset.
    if runtime_dir and os.path.isabs(runtime_dir) and os.path.isdir(runtime_dir):
        return Path(runtime_dir) / "exlsp" / SOCKET_NAME
    tmp = env.get("TMPDIR") or "/tmp"
    return Path(tmp) / f"exlsp-{os.getuid()}" / SOCKET_NAME


def resolve_socket_path(explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """``--socket`` > ``$EXLSP_SOCKET`` > the default. The same for the server and every client."""
    env = os.environ if environ is None else environ
    chosen = explicit or env.get("EXLSP_SOCKET")
    if chosen:
        return Path(os.path.expanduser(os.fspath(chosen))).absolute()
    return default_socket_path(env)


def prepare_directory(path: Path, environ: Mapping[str, str] | None = None) -> None:
    """Make sure the socket's directory exists and is safe (see the module's docstring)."""
    directory = path.parent
    if directory == default_socket_path(environ).parent:
        _prepare_own_directory(directory)
    elif not directory.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def _prepare_own_directory(directory: Path) -> None:
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SocketSetupError(f"cannot create the socket directory {directory}: {exc.strerror}") from None
    # lstat, not stat: a symlink planted in /tmp must not lead us into someone else's directory.
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise SocketSetupError(f"the socket directory {directory} is not a directory (a symlink?); remove it")
    if st.st_uid != os.getuid():
        raise SocketSetupError(
            f"the socket directory {directory} belongs to uid {st.st_uid}, not to you; "
            "remove it or set $EXLSP_SOCKET"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        log.warning("socket directory %s had mode %o; set to 700", directory, stat.S_IMODE(st.st_mode))
        os.chmod(directory, 0o700)


@dataclass
class ClaimedSocket:
    """A bound, listening socket and the lock that makes this process its owner."""

    path: Path
    sock: socket.socket
    _lock_fd: int
    _identity: tuple[int, int]
    _released: bool = field(default=False, repr=False)

    def is_intact(self) -> bool:
        """Whether the path still names the socket we bound (not removed, nor replaced)."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell (a permission change): do not thrash
        return (st.st_dev, st.st_ino) == self._identity

    def release(self) -> None:
        """Close the socket; remove its file and the lock file (each only if still ours)."""
        if self._released:
            return
        self._released = True
        self.sock.close()
        try:
            if self.is_intact():
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            _unlock(self.path, self._lock_fd)


def claim_socket(path: Path, *, backlog: int = 128, probe_timeout: float = 1.0) -> ClaimedSocket:
    """Bind and listen on ``path`` (0600) or raise ``SocketInUse`` / ``SocketSetupError``.
    Blocking (a probe may wait up to ``probe_timeout``): call it from a worker thread."""
    path = Path(path)
    size = len(os.fsencode(path))
    if size > MAX_PATH_BYTES:
        raise SocketSetupError(
            f"the socket path {path} is too long ({size} bytes, at most {MAX_PATH_BYTES}); set $EXLSP_SOCKET to a shorter one"
        )
    prepare_directory(path)
    lock_fd = _take_lock(path)
    try:
        _remove_if_stale(path, probe_timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # umask is process-wide, but only this bind creates a file here; the chmod below
            # covers a platform where bind ignores it.
            old = os.umask(0o177)
            try:
                sock.bind(os.fspath(path))
            finally:
                os.umask(old)
            os.chmod(path, 0o600)
            sock.listen(backlog)
            st = os.lstat(path)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise SocketInUse(_in_use_message(path, exlsp=False)) from None
            raise SocketSetupError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    except BaseException:
        _unlock(path, lock_fd)
        raise
    return ClaimedSocket(path, sock, lock_fd, (st.st_dev, st.st_ino))


def _in_use_message(path: Path, pid: int | None = None, *, exlsp: bool = True) -> str:
    who = "another exlsp" if exlsp else "another process"
    owner = f"{who} owns {path}" + (f" (pid {pid})" if pid else "")
    return f"{owner}; it is left alone (use --socket or $EXLSP_SOCKET for a second one)"


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


def _take_lock(path: Path, attempts: int = 10) -> int:
    lock_path = _lock_path(path)
    for _ in range(attempts):
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise SocketSetupError(f"cannot open the lock file {lock_path}: {exc.strerror}") from None
        try:
            # flock, not lockf: flock locks conflict between two opens in one process as well.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SocketInUse(_in_use_message(path, pid)) from None
            raise SocketSetupError(f"cannot lock {lock_path}: {exc.strerror}") from None
        if _same_file(fd, lock_path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)  # its owner removed it as we locked it: lock the file now at the path
    raise SocketSetupError(f"cannot lock {lock_path}: it keeps being replaced")


def _unlock(path: Path, fd: int) -> None:
    """Remove the lock file (if it is still ours) while still locked, then let go of it: see
    _take_lock for why that cannot admit two owners."""
    try:
        if _same_file(fd, _lock_path(path)):
            os.unlink(_lock_path(path))
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _remove_if_stale(path: Path, probe_timeout: float) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketSetupError(f"{path} exists and is not a socket; it is left alone (move it, or choose another path)")
    if is_live(path, probe_timeout):
        # A process that does not use our lock (an older exlsp, something else) answers there.
        raise SocketInUse(_in_use_message(path, exlsp=False))
    log.info("replacing stale socket %s", path)
    os.unlink(path)


def is_live(path: Path, timeout: float = 1.0) -> bool:
    """Whether a process accepts connections on ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(os.fspath(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        return True  # a timeout (full backlog) or a permission error: someone is there
    finally:
        probe.close()
    return True
