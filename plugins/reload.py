"""Importing local plugin files, and re-importing them when they change (hot reload).

A local plugin is one ``*.py`` file, imported under ``exlsp_local_plugins.<name>`` so that it can
never shadow or be shadowed by an installed module. ``watch_plugins`` follows the local plugin
folders with watchfiles and asks the manager to re-sync; the manager re-imports only the files
whose content changed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import linecache
import logging
import re
import sys
import threading
import traceback
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus
from watchfiles import Change, awatch

if TYPE_CHECKING:
    from .manager import PluginManager

log = logging.getLogger("exlsp.plugins")

MODULE_PREFIX = "exlsp_local_plugins"


def module_name_for(plugin: str) -> str:
    safe = re.sub(r"\W", "_", plugin)
    if safe != plugin or not safe.isidentifier():
        # Keep "my-plugin" and "my_plugin" apart in sys.modules.
        safe = f"_{safe}_{hashlib.sha1(plugin.encode()).hexdigest()[:8]}"
    return f"{MODULE_PREFIX}.{safe}"


def import_file(path: Path, source: bytes, module_name: str) -> ModuleType:
    """Execute ``source`` (the file's bytes, already read) as a fresh module.

    Compiled here rather than through the import system so that no ``__pycache__`` is written into
    the plugin folder and no stale bytecode is reused: .pyc files are keyed on mtime in whole
    seconds, and an editor can save twice in one second."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses and typing look the module up in sys.modules while it executes.
    sys.modules[module_name] = module
    try:
        code = compile(source, str(path), "exec", dont_inherit=True)
        exec(code, module.__dict__)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    linecache.checkcache(str(path))  # tracebacks must show the new text, not the old
    return module


def forget_module(module_name: str) -> None:
    sys.modules.pop(module_name, None)


@dataclass(frozen=True, slots=True)
class LocalFile:
    name: str
    index: int  # of its folder: the load order
    path: Path
    source: bytes
    fingerprint: bytes


def plan_sync(
    folders: Sequence[Path], loaded: Mapping[str, tuple[Path | None, bytes]], taken: Collection[str], force: bool
) -> tuple[list[str], list[LocalFile], list[tuple[Path, str]]]:
    """What to do to bring the local plugins in line with the folders.

    ``loaded``: the local plugins known now, name -> (path, fingerprint); ``taken``: names of the
    other plugins. Returns the names to drop, the files to (re)load, and (path, reason) for the files
    that cannot load because their name is taken. A file is re-imported only when its content
    changed (or ``force``), so a missed or repeated file event costs nothing."""
    found: dict[str, tuple[int, Path]] = {}
    conflicts: list[tuple[Path, str]] = []
    for index, folder in enumerate(folders):
        for path in sorted(folder.glob("*.py")) if folder.is_dir() else ():
            # "_helpers.py", editor lock files ".#x.py": not plugins.
            if path.stem.startswith(("_", ".")) or not path.is_file():
                continue
            if path.stem in taken:
                conflicts.append((path, f"name already used by the plugin {path.stem!r}"))
            elif path.stem in found:
                conflicts.append((path, f"name already used by {found[path.stem][1]}"))
            else:
                found[path.stem] = (index, path)
    drop = [name for name, (path, _) in loaded.items() if name not in found or found[name][1] != path]
    load = []
    for name, (index, path) in found.items():
        try:
            source = path.read_bytes()
        except OSError:  # deleted or unreadable since the scan; its own event follows
            continue
        fingerprint = hashlib.sha256(source).digest()
        if force or name in drop or name not in loaded or loaded[name][1] != fingerprint:
            load.append(LocalFile(name, index, path, source, fingerprint))
    return drop, load, conflicts


def import_failure_reason(exc: BaseException, path: Path | None = None) -> str:
    """One line: exception type, message and where (file:line) the import failed."""
    if isinstance(exc, SyntaxError):
        where = f" ({exc.filename}:{exc.lineno})" if exc.filename else ""
        return f"import failed: {type(exc).__name__}: {exc.msg}{where}"
    frames = traceback.extract_tb(exc.__traceback__)
    if path is not None:
        frames = [f for f in frames if f.filename == str(path)]
    else:
        # An entry point: the innermost frame outside the import machinery.
        frames = [f for f in frames if not f.filename.startswith("<") and "importlib" not in f.filename]
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"import failed: {type(exc).__name__}: {exc}{where}"


# ---- hot reload ----------------------------------------------------------------------------------


class _ReadyStop:
    """The stop event handed to watchfiles, which also says when the watcher is running.

    watchfiles creates its native watcher inside the generator and only then polls ``is_set`` from
    its worker thread, so the first poll proves that file events are being recorded; signalling
    readiness earlier would lose the events of a file written right after start-up."""

    def __init__(self, stop: anyio.Event) -> None:
        self.stop = stop
        self.ready = threading.Event()

    def is_set(self) -> bool:
        self.ready.set()
        return self.stop.is_set()

    def set(self) -> None:
        self.stop.set()


def _is_python_file(change: Change, path: str) -> bool:
    return path.endswith(".py")


async def watch_plugins(
    manager: PluginManager,
    *,
    debounce_ms: int = 200,
    poll_s: float = 1.0,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Hot-reload local plugins until cancelled. Start it with ``task_group.start``.

    Existing folders are watched with watchfiles (not recursively). A folder that does not exist is
    not created: its existence is checked every ``poll_s`` seconds, and when it appears (or a
    watched one vanishes) the watcher restarts on the new set of folders and re-syncs. Watching the
    parent instead would mean a recursive watch of ~/.config or even $HOME."""
    manager.load()
    started = False
    while True:
        folders = list(manager.local_dirs)
        present = [d for d in folders if d.is_dir()]
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            try:
                if present:
                    probe = _ReadyStop(stop)
                    tg.start_soon(_follow, manager, present, debounce_ms, poll_s, probe)
                    with anyio.move_on_after(5):  # never hang start-up on a stuck watcher
                        while not probe.ready.is_set():
                            await anyio.sleep(0.01)
                tg.start_soon(_watch_folders, folders, present, poll_s, stop)
                # Catch what changed between load() (or the last restart) and the watcher starting.
                _sync(manager)
                if not started:
                    task_status.started()
                    started = True
                await stop.wait()
            finally:
                # watchfiles' thread does not see a cancellation until its timeout (5 s); the stop
                # event ends it at its next 50 ms step.
                stop.set()
        log.debug("plugin folders changed; watching %s", [d for d in folders if d.is_dir()])


async def _follow(
    manager: PluginManager, folders: list[Path], debounce_ms: int, poll_s: float, probe: _ReadyStop
) -> None:
    try:
        async for _changes in awatch(
            *folders,
            watch_filter=_is_python_file,
            debounce=debounce_ms,
            step=50,
            stop_event=probe,
            recursive=False,
        ):
            # The manager compares contents, so a missed or merged event costs nothing.
            _sync(manager)
    except Exception as exc:  # e.g. out of inotify watches
        manager.warn(f"cannot watch plugin folders ({type(exc).__name__}: {exc}); polling every {poll_s} s")
        probe.ready.set()
        while not probe.stop.is_set():
            await anyio.sleep(poll_s)
            _sync(manager)


def _sync(manager: PluginManager) -> None:
    # Plugin errors are handled inside; this is for exlsp's own bugs, which must not end the server.
    try:
        manager.sync_local()
    except Exception as exc:
        log.exception("plugin reload failed")
        manager.warn(f"plugin reload failed: {type(exc).__name__}: {exc}")


async def _watch_folders(folders: list[Path], present: list[Path], poll_s: float, stop: anyio.Event) -> None:
    while not stop.is_set():
        with anyio.move_on_after(poll_s):
            await stop.wait()
        if [d for d in folders if d.is_dir()] != present:
            stop.set()
