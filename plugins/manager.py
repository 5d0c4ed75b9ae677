"""Finds, loads, guards and reports plugins.

Load order, which is also precedence (later wins): built-ins (entry points of the ``exlsp``
distribution), entry points of other distributions (by distribution, then name), local files
(folder by folder, the default folder first, then by name), objects registered from code. One
object per kind and ``name`` is returned: a later one shadows an earlier one, with a warning.

A plugin that fails (import, registration, a call through ``guarded``) is *blocked*: unregistered,
its objects never returned again, the reason kept for ``report()``. A call over its time budget is
a *strike* instead: that request goes on without the plugin, and the plugin is blocked at its
third strike among its last 20 calls, or as soon as three of its calls hang or its calls leave
more than eight threads running (``guard.py``). A plugin the user left out (allow list, block
list) is *disabled* and never imported. Use it from one thread (the loop's).
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import anyio
import msgspec
import pluggy

from exlsp.runtime import ExlspError

from . import hookspecs
from .api import ChatCommand, ChatFormat, ContextProvider, PostProcessor, PromptFormat
from .guard import MAX_PLUGIN_THREADS, STRIKES, CallRecord, await_within, call_in_thread, call_in_thread_async
from .reload import LocalFile, forget_module, import_failure_reason, import_file, module_name_for, plan_sync
from .settings import default_plugins_dir, merge_settings

log = logging.getLogger("exlsp.plugins")

T = TypeVar("T")
Source = Literal["builtin", "entry point", "file", "object"]
Status = Literal["enabled", "blocked", "disabled"]
Expect = type | tuple[type, ...] | None

ENV_ALLOW = "EXLSP_PLUGINS"
OWN_DISTRIBUTION = "exlsp"
# kind -> (its registration hook, the protocol its objects follow)
KINDS: dict[str, tuple[str, type]] = {
    "prompt_formats": ("exlsp_register_prompt_formats", PromptFormat),
    "chat_formats": ("exlsp_register_chat_formats", ChatFormat),
    "context_providers": ("exlsp_register_context_providers", ContextProvider),
    "postprocessors": ("exlsp_register_postprocessors", PostProcessor),
    "chat_commands": ("exlsp_register_chat_commands", ChatCommand),
}
_RANK = {"builtin": 0, "entry point": 1, "file": 2, "object": 3}
_LOOP_SLACK_S = 0.1


class PluginFailed(ExlspError):
    """A plugin call failed: skip the plugin for this request. ``blocked``: it is now blocked (or
    already was); otherwise the call was over its budget and counted as a strike."""

    def __init__(self, plugin: str, reason: str, *, blocked: bool = True) -> None:
        super().__init__(f"plugin {plugin!r} {'is blocked' if blocked else 'failed'}: {reason}")
        self.plugin = plugin
        self.reason = reason
        self.blocked = blocked


@dataclass(frozen=True, slots=True)
class Registered(Generic[T]):
    """An object a plugin registered, with the name of that plugin."""

    plugin: str
    obj: T


class PluginInfo(msgspec.Struct):
    """One line of ``exlsp plugins`` (``--json`` prints a list of these)."""

    name: str
    source: Source
    version: str
    hooks: list[str]
    status: Status
    reason: str = ""


def unsafe_to_import(path: Path) -> str | None:
    """Why a local plugin file must not be imported, or None. As ssh does with its keys: the file
    and its folder must belong to this user (or root) and be writable by no one else, or another
    user could plant code that runs as this one."""
    me = os.getuid()
    for target in (path, path.parent):
        try:
            st = target.stat()
        except OSError as exc:
            return f"{target}: cannot check its owner ({exc.strerror})"
        if st.st_uid not in (me, 0):
            return f"{target} belongs to uid {st.st_uid}, not to this user: not imported"
        if st.st_mode & 0o022:
            return f"{target} is writable by other users (chmod go-w it): not imported"
    return None


class _Refused(Exception):
    """A plugin broke a rule while being registered; the message is the reason shown."""


@dataclass(eq=False)
class _Plugin:
    name: str
    source: Source
    rank: tuple[int, str, int, str]  # load order
    version: str = ""
    status: Status = "enabled"
    reason: str = ""
    plugin: object = None  # what pluggy holds: a module, or any object with hook functions
    path: Path | None = None
    fingerprint: bytes = b""
    hooks: list[str] = field(default_factory=list)
    objects: list[tuple[str, Any]] = field(default_factory=list)  # (kind, object)
    defaults: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] | None = None  # None: objects not configured yet
    calls: CallRecord = field(default_factory=CallRecord)  # strikes, hung calls, threads left running

    def info(self) -> PluginInfo:
        return PluginInfo(self.name, self.source, self.version, list(self.hooks), self.status, self.reason)


class PluginManager:
    def __init__(
        self,
        local_dirs: Sequence[Path] | None = None,
        allow: Collection[str] | None = None,
        block: Collection[str] = (),
        entry_points: bool = True,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        hook_timeout_s: float = 1.0,
        strikes: int = STRIKES,
    ) -> None:
        if strikes < 1:
            raise ValueError(f"strikes must be at least 1, got {strikes}")
        self.hook_timeout_s = hook_timeout_s
        self.strikes = strikes
        self.generation = 0
        self.loads: dict[str, int] = {}
        self.warnings: list[str] = []
        self.on_change: list[Callable[[], None]] = []
        self._entry_points = entry_points
        self._file_settings = {k: dict(v) for k, v in (settings or {}).items()}  # the config file's
        self._user_settings = {k: dict(v) for k, v in self._file_settings.items()}
        env = os.environ.get(ENV_ALLOW)
        # The environment beats the config file, as everywhere in exlsp; "" loads nothing.
        if env is not None:
            self._allow: frozenset[str] | None = frozenset(n.strip() for n in env.split(",") if n.strip())
            self._allow_origin = ENV_ALLOW
        else:
            self._allow = frozenset(allow) if allow is not None else None
            self._allow_origin = "the allow list"
        self._block = frozenset(block)
        self._local_dirs: list[Path] = []
        for folder in [default_plugins_dir(), *(local_dirs or ())]:
            folder = Path(folder).expanduser()
            if not folder.is_absolute():
                self.warn(f"plugin folder {folder} ignored: a relative folder would load plugins from the cwd")
            elif folder not in self._local_dirs:
                self._local_dirs.append(folder)
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._plugins: dict[str, _Plugin] = {}
        self._conflicts: list[PluginInfo] = []  # entry points whose name was taken
        self._local_conflicts: list[PluginInfo] = []
        self._cache: dict[tuple[str, str | None], list[Registered[Any]]] = {}
        self._loaded = False
        self._objects_seq = 0

    @property
    def local_dirs(self) -> list[Path]:
        return list(self._local_dirs)

    # ---- loading -------------------------------------------------------------------------------

    def load(self) -> None:
        """Discover and register every plugin. Only the first call does anything."""
        if self._loaded:
            return
        self._loaded = True
        if self._entry_points:
            self._load_entry_points()
        self._sync_local(force=False)
        for name in sorted((self._allow or frozenset()) - self._plugins.keys()):
            self.warn(f"{self._allow_origin} names {name!r}, but no such plugin was found")
        self._changed()

    def register_object(self, plugin: object, name: str, source: str = "object") -> None:
        """Register a plugin object (a module, class or instance with hook functions) from code."""
        if name in self._plugins:
            raise ValueError(f"a plugin named {name!r} is already registered")
        self._objects_seq += 1
        rec = _Plugin(name, source, (_RANK.get(source, 3), "", self._objects_seq, ""))  # type: ignore[arg-type]
        self._plugins[name] = rec
        if self._admit(rec):
            self._register(rec, plugin)
        self._changed()

    def reload_local(self) -> list[str]:
        """Re-import every local plugin file, changed or not, and pick up new or deleted files.
        Returns the names of the plugins (re)loaded or removed."""
        return self._sync_and_notify(force=True)

    def sync_local(self) -> list[str]:
        """Like ``reload_local``, but re-imports only the files whose content changed."""
        return self._sync_and_notify(force=False)

    def block(self, name: str, reason: str) -> None:
        """Block a plugin: unregister it and never return its objects again."""
        rec = self._plugins.get(name)
        if rec is not None and rec.status != "blocked":
            self._refuse(rec, reason)
            self._changed()

    def warn(self, message: str) -> None:
        log.warning("%s", message)
        if message not in self.warnings:
            self.warnings.append(message)

    def _load_entry_points(self) -> None:
        found = []
        for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
            dist = _normalize(ep.dist.name) if ep.dist else ""
            source: Source = "builtin" if dist == OWN_DISTRIBUTION else "entry point"
            found.append(((_RANK[source], "" if source == "builtin" else dist, 0, ep.name), source, dist, ep))
        owner: dict[str, str] = {}
        for rank, source, dist, ep in sorted(found, key=lambda item: item[0]):
            version = ep.dist.version if ep.dist else ""
            if ep.name in owner:
                if owner[ep.name] != dist:  # the same distribution twice on sys.path is no conflict
                    reason = f"name already used by the entry point of {owner[ep.name]!r}"
                    self._conflicts.append(PluginInfo(ep.name, source, version, [], "blocked", reason))
                    self.warn(f"plugin {ep.name!r} of {dist!r} not loaded: {reason}")
                continue
            owner[ep.name] = dist
            rec = self._plugins[ep.name] = _Plugin(ep.name, source, rank, version=version)
            if self._admit(rec):
                try:
                    plugin = ep.load()
                except (Exception, SystemExit) as exc:
                    self._refuse(rec, import_failure_reason(exc))
                    continue
                self._register(rec, plugin)

    def _sync_and_notify(self, force: bool) -> list[str]:
        changed = self._sync_local(force)
        if changed:
            self._changed()
        return changed

    def _sync_local(self, force: bool) -> list[str]:
        files = {r.name: (r.path, r.fingerprint) for r in self._plugins.values() if r.source == "file"}
        taken = [name for name in self._plugins if name not in files]
        drop, load, conflicts = plan_sync(self._local_dirs, files, taken, force)
        for name in drop + [f.name for f in load if f.name in self._plugins and f.name not in drop]:
            self._drop(self._plugins[name])
        for file in load:
            self._load_file(file)
        infos = [PluginInfo(path.stem, "file", "", [], "blocked", f"{path}: {why}") for path, why in conflicts]
        for info in infos:
            if info not in self._local_conflicts:
                self.warn(f"local plugin {info.name!r} not loaded: {info.reason}")
        self._local_conflicts = infos
        return sorted(set(drop) | {f.name for f in load})

    def _load_file(self, file: LocalFile) -> None:
        rank = (_RANK["file"], "", file.index, file.name)
        rec = _Plugin(file.name, "file", rank, path=file.path, fingerprint=file.fingerprint)
        self._plugins[file.name] = rec
        if not self._admit(rec):
            return
        unsafe = unsafe_to_import(file.path)
        if unsafe is not None:
            self._refuse(rec, unsafe)
            return
        try:
            module = import_file(file.path, file.source, module_name_for(file.name))
        except (Exception, SystemExit) as exc:
            self._refuse(rec, import_failure_reason(exc, file.path))
            return
        rec.version = str(getattr(module, "__version__", "") or "")
        self._register(rec, module)

    def _drop(self, rec: _Plugin) -> None:
        if rec.plugin is not None and self._pm.is_registered(rec.plugin):
            self._pm.unregister(rec.plugin)
        if rec.source == "file":
            forget_module(module_name_for(rec.name))
        del self._plugins[rec.name]

    def _admit(self, rec: _Plugin) -> bool:
        if rec.name in self._block:
            rec.status, rec.reason = "disabled", "in the block list"
        elif self._allow is not None and rec.name not in self._allow:
            rec.status, rec.reason = "disabled", f"not in {self._allow_origin}"
        return rec.status == "enabled"

    def _register(self, rec: _Plugin, plugin: object) -> None:
        self.loads[rec.name] = self.loads.get(rec.name, 0) + 1
        try:
            self._pm.register(plugin, name=rec.name)
        except Exception as exc:  # pluggy's PluginValidationError, or the object is already registered
            self._refuse(rec, f"cannot register: {exc}")
            return
        rec.plugin = plugin
        callers = self._pm.get_hookcallers(plugin) or []
        rec.hooks = sorted(c.name for c in callers)
        try:
            unknown = [c.name for c in callers if c.spec is None]
            if unknown:
                raise _Refused(f"implements unknown hook {', '.join(unknown)} (a typo?)")
            if not rec.hooks:
                self.warn(f"plugin {rec.name!r} implements no exlsp_ hook (missing @hookimpl?)")
            for defaults in self._call_hook(rec, "exlsp_default_settings"):
                if not isinstance(defaults, dict):
                    raise _Refused(f"exlsp_default_settings returned {type(defaults).__name__}, expected dict")
                rec.defaults.update(defaults)
            for kind, (hook, protocol) in KINDS.items():
                objects: list[object] = []
                self._call_hook(rec, hook, register=objects.append)
                for obj in objects:
                    if problem := _protocol_problem(obj, protocol):
                        raise _Refused(f"{hook} registered {obj!r}, {problem}")
                    rec.objects.append((kind, obj))
            self._apply_settings(rec)
        except _Refused as exc:
            self._refuse(rec, str(exc))

    def _call_hook(self, rec: _Plugin, hook: str, **kwargs: Any) -> list[Any]:
        # Each implementation is called on its own so that a failure is charged to its plugin.
        results = []
        for impl in getattr(self._pm.hook, hook).get_hookimpls():
            if impl.plugin_name != rec.name or impl.hookwrapper or impl.wrapper:
                continue
            try:
                result = impl.function(*(kwargs[arg] for arg in impl.argnames))
            except Exception as exc:
                raise _Refused(f"{hook} raised {type(exc).__name__}: {exc}") from exc
            if inspect.isawaitable(result):
                _close(result)
                raise _Refused(f"{hook} must not be async")
            results.append(result)
        return results

    def _refuse(self, rec: _Plugin, reason: str) -> None:
        if rec.plugin is not None and self._pm.is_registered(rec.plugin):
            self._pm.unregister(rec.plugin)
        rec.status, rec.reason, rec.objects = "blocked", reason, []
        self.warn(f"plugin {rec.name!r} blocked: {reason}")

    def _changed(self) -> None:
        self.generation += 1
        self._cache.clear()
        for callback in list(self.on_change):
            try:
                callback()
            except Exception as exc:
                self.warn(f"on_change callback {callback!r} raised {type(exc).__name__}: {exc}")

    # ---- settings ------------------------------------------------------------------------------

    def settings_for(self, plugin: str) -> dict[str, Any]:
        """The plugin's default settings overridden by the user's ``[plugins.<name>]`` table."""
        rec = self._plugins.get(plugin)
        if rec is not None and rec.settings is not None:
            return dict(rec.settings)
        return merge_settings(plugin, rec.defaults if rec else {}, self._user_settings.get(plugin))[0]

    def update_settings(self, settings: Mapping[str, Mapping[str, Any]]) -> None:
        """Layer the editor's plugin settings over the config file's (per plugin, per key: an editor
        never silently undoes a user's opt-out such as ``[plugins.shell] send_history = false``);
        objects with ``configure`` get their new settings."""
        self._user_settings = {
            name: {**self._file_settings.get(name, {}), **dict(settings.get(name, {}))}
            for name in {*self._file_settings, *settings}
        }
        blocked = False
        for rec in [r for r in self._plugins.values() if r.status == "enabled"]:
            try:
                self._apply_settings(rec)
            except _Refused as exc:
                self._refuse(rec, str(exc))
                blocked = True
        if blocked:
            self._changed()

    def _apply_settings(self, rec: _Plugin) -> None:
        merged, problems = merge_settings(rec.name, rec.defaults, self._user_settings.get(rec.name))
        for problem in problems:
            self.warn(problem)
        if merged == rec.settings:
            return
        rec.settings = merged
        for _, obj in rec.objects:
            configure = getattr(obj, "configure", None)
            if callable(configure):
                try:
                    configure(dict(merged))
                except Exception as exc:
                    raise _Refused(f"configure() raised {type(exc).__name__}: {exc}") from exc

    # ---- what the assistant asks for -------------------------------------------------------------

    def prompt_formats(self) -> list[Registered[PromptFormat]]:
        return self._objects("prompt_formats", None)

    def chat_formats(self) -> list[Registered[ChatFormat]]:
        return self._objects("chat_formats", None)

    def context_providers(self, kind: str | None = None) -> list[Registered[ContextProvider]]:
        return self._objects("context_providers", kind)

    def postprocessors(self, kind: str | None = None) -> list[Registered[PostProcessor]]:
        """In ascending ``order``; equal orders in load order."""
        return self._objects("postprocessors", kind)

    def chat_commands(self) -> list[Registered[ChatCommand]]:
        return self._objects("chat_commands", None)

    def report(self) -> list[PluginInfo]:
        return [rec.info() for rec in self._ordered()] + self._conflicts + self._local_conflicts

    def _ordered(self) -> list[_Plugin]:
        return sorted(self._plugins.values(), key=lambda rec: rec.rank)

    def _objects(self, kind: str, query_kind: str | None) -> list[Any]:
        key = (kind, query_kind)
        if key in self._cache:
            return list(self._cache[key])
        if query_kind is not None:
            # Filter after shadowing: a same-named object replaces the other one for every kind.
            found = [r for r in self._objects(kind, None) if query_kind in r.obj.kinds]
        else:
            by_name: dict[str, Registered[Any]] = {}
            for rec in self._ordered():
                for k, obj in rec.objects if rec.status == "enabled" else ():
                    if k != kind:
                        continue
                    shadowed = by_name.pop(obj.name, None)  # pop: the winner takes the later position
                    if shadowed is not None:
                        self.warn(
                            f"{kind[:-1].replace('_', ' ')} {obj.name!r} of plugin {shadowed.plugin!r} is "
                            f"shadowed by the one of plugin {rec.name!r} (loaded later)"
                        )
                    by_name[obj.name] = Registered(rec.name, obj)
            found = list(by_name.values())
            if kind == "postprocessors":
                found.sort(key=lambda r: r.obj.order)
        self._cache[key] = found
        return list(found)

    # ---- calling plugin objects ------------------------------------------------------------------

    async def guarded(
        self,
        registered: Registered[Any],
        method_name: str,
        *args: Any,
        timeout_s: float | None = None,
        expect: Expect = None,
    ) -> Any:
        """Call ``registered.obj.<method_name>(*args)`` within ``timeout_s`` (default
        ``hook_timeout_s``). A coroutine method runs on the loop and is cancelled at the budget; a
        plain one runs in a worker thread, so that even one that never returns leaves the loop
        free (an awaitable it returns is awaited in what is left of the budget). An exception or a
        result that is not an ``expect`` blocks the plugin; a call over budget is a strike. Either
        way the call raises ``PluginFailed``."""
        rec, budget = self._admit_call(registered, timeout_s)
        start = time.perf_counter()
        limit: float | None = None
        try:
            method = getattr(registered.obj, method_name)
            if inspect.iscoroutinefunction(method):
                result, in_time = await await_within(rec.calls, method(*args), budget)
                # The deadline bounds an awaiting call; the clock here also counts other tasks'
                # turns, so it only catches a coroutine that blocked the loop, with slack.
                limit = 2 * budget + _LOOP_SLACK_S
            else:
                result, in_time = await call_in_thread_async(rec.calls, method, args, budget)
                if in_time and inspect.isawaitable(result):
                    result, in_time = await await_within(rec.calls, result, budget - (time.perf_counter() - start))
        except Exception as exc:
            self._fail(registered, f"{method_name}() raised {type(exc).__name__}: {exc}")
        if not in_time:
            self._strike(registered, f"{method_name}() timed out after {budget} s")
        return self._judge(registered, method_name, result, time.perf_counter() - start, limit, expect)

    def guarded_sync(
        self,
        registered: Registered[Any],
        method_name: str,
        *args: Any,
        timeout_s: float | None = None,
        expect: Expect = None,
        block_on_error: bool = True,
    ) -> Any:
        """``guarded`` for plain methods called where the caller cannot await (post-processors,
        prompt and chat formats): same rules. The call runs in a worker thread and the caller
        waits at most the budget, so a hung method stalls the loop for its budget, not for ever.
        An awaitable result is wrong. ``block_on_error=False`` re-raises what the method raised,
        for a caller that falls back for that one call instead."""
        rec, budget = self._admit_call(registered, timeout_s)
        try:
            result, in_time = call_in_thread(rec.calls, getattr(registered.obj, method_name), args, budget)
        except Exception as exc:
            if not block_on_error:
                raise
            self._fail(registered, f"{method_name}() raised {type(exc).__name__}: {exc}")
        if not in_time:
            self._strike(registered, f"{method_name}() timed out after {budget} s")
        if inspect.isawaitable(result):
            _close(result)
            self._fail(registered, f"{method_name}() returned an awaitable; it must be a plain function")
        return self._judge(registered, method_name, result, 0.0, None, expect)

    def _admit_call(self, registered: Registered[Any], timeout_s: float | None) -> tuple[_Plugin, float]:
        rec = self._plugins.get(registered.plugin)
        if rec is None or rec.status != "enabled":
            raise PluginFailed(registered.plugin, rec.reason if rec is not None else "not loaded")
        if not any(obj is registered.obj for _, obj in rec.objects):
            raise PluginFailed(registered.plugin, "this object is from an earlier load of the plugin")
        return rec, self.hook_timeout_s if timeout_s is None else timeout_s

    def _judge(
        self, registered: Registered[Any], method: str, result: Any, elapsed: float, limit: float | None, expect: Expect
    ) -> Any:
        # A coroutine that never awaits cannot be cancelled: it ran on the loop and stalled it.
        if limit is not None and elapsed > limit:
            self._strike(registered, f"{method}() took {elapsed:.2f} s, over its {limit:g} s budget")
        if expect is not None and not isinstance(result, expect):
            names = " or ".join(t.__name__ for t in (expect if isinstance(expect, tuple) else (expect,)))
            self._fail(registered, f"{method}() returned {type(result).__name__}, expected {names}")
        rec = self._current(registered)
        if rec is not None:
            rec.calls.note(False)
            self._check_threads(registered, rec)
        return result

    def _current(self, registered: Registered[Any]) -> _Plugin | None:
        """The plugin's record if ``registered`` is from its current load. A reload may have
        replaced the plugin while the call ran: the new version is never charged for the old."""
        rec = self._plugins.get(registered.plugin)
        if rec is not None and any(obj is registered.obj for _, obj in rec.objects):
            return rec
        return None

    def _check_threads(self, registered: Registered[Any], rec: _Plugin) -> None:
        alive = rec.calls.live_threads()
        if alive > MAX_PLUGIN_THREADS:
            self._fail(registered, f"its calls left {alive} threads running (at most {MAX_PLUGIN_THREADS})")

    def _strike(self, registered: Registered[Any], reason: str) -> Any:
        """A call over its budget: block the plugin at its ``strikes``-th strike among its recent
        calls, or when that many of its calls are still running past their budget; else raise
        ``PluginFailed`` for this call only."""
        rec = self._current(registered)
        if rec is None:
            raise PluginFailed(registered.plugin, reason, blocked=False)
        strikes = rec.calls.note(True)
        if strikes >= self.strikes:
            recent = len(rec.calls.recent)
            self._fail(
                registered, reason if self.strikes == 1 else f"{reason}; {strikes} of its last {recent} calls were over budget"
            )
        stuck = rec.calls.stuck()
        if stuck >= self.strikes:
            self._fail(registered, f"{reason}; {stuck} of its calls are still running past their budget")
        self._check_threads(registered, rec)
        log.warning("plugin %r: %s (strike %d of %d)", registered.plugin, reason, strikes, self.strikes)
        raise PluginFailed(registered.plugin, f"{reason} (strike {strikes} of {self.strikes})", blocked=False)

    def _fail(self, registered: Registered[Any], reason: str) -> Any:
        if self._current(registered) is not None:
            self.block(registered.plugin, reason)
        raise PluginFailed(registered.plugin, reason)


def _normalize(distribution: str) -> str:
    return distribution.lower().replace("-", "_").replace(".", "_")


# Checked once at registration, so that e.g. ``order = "5"`` cannot break every later request.
_ATTR_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "description": (str,),
    "order": (int, float),
    "timeout_s": (int, float),
    "kinds": (frozenset, set, tuple, list),
}


def _protocol_problem(obj: object, protocol: type) -> str:
    attrs = set(getattr(protocol, "__annotations__", {}))
    attrs.update(n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_"))
    missing = sorted(a for a in attrs if not hasattr(obj, a))
    if missing:
        return f"which lacks {', '.join(missing)}"
    for attr in sorted(attrs & _ATTR_TYPES.keys()):
        value = getattr(obj, attr)
        if not isinstance(value, _ATTR_TYPES[attr]) or isinstance(value, bool):
            expected = " or ".join(t.__name__ for t in _ATTR_TYPES[attr])
            return f"whose {attr} is a {type(value).__name__}, expected {expected}"
    return ""


def _close(awaitable: object) -> None:
    close = getattr(awaitable, "close", None)  # no "coroutine was never awaited" warning
    if callable(close):
        close()
