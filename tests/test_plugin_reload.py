"""Hot reload of local plugins: watch_plugins (watchfiles) and reload_local / sync_local on demand."""

from __future__ import annotations

import shutil
import sys
import time
from functools import partial
from pathlib import Path

import anyio
import pytest

import exlsp.plugins.reload as reload_module
from exlsp.plugins.manager import PluginFailed, PluginManager
from exlsp.plugins.reload import watch_plugins

FAST = {"debounce_ms": 50, "poll_s": 0.1}


@pytest.fixture
def config_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("EXLSP_PLUGINS", raising=False)
    yield tmp_path / "config"
    for name in [m for m in sys.modules if m.startswith("exlsp_local_plugins.")]:
        del sys.modules[name]


@pytest.fixture
def plugin_dir(config_home) -> Path:
    folder = config_home / "exlsp" / "plugins"
    folder.mkdir(parents=True)
    return folder


def plugin(tag: str) -> str:
    # Every version has the same length: an edit that keeps size and mtime second must still count.
    return f"""from exlsp.plugins import hookimpl

class Tag:
    name = "tag"
    order = 1
    kinds = frozenset({{"completion"}})

    def process(self, text, ctx):
        return text + "-{tag}"

@hookimpl
def exlsp_register_postprocessors(register):
    register(Tag())
"""


BROKEN = plugin("v0").replace("def process(self, text, ctx):", "def process(self, text, ctx)")


def output(pm: PluginManager) -> str | None:
    found = pm.postprocessors()
    return found[0].obj.process("x", None) if found else None


def status(pm: PluginManager, name: str) -> str | None:
    return next((i.status for i in pm.report() if i.name == name), None)


async def wait_until(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the time limit"
        await anyio.sleep(0.02)


async def test_hot_reload_add_change_break_fix_delete(plugin_dir):
    pm = PluginManager(entry_points=False)
    pm.load()
    changes = []
    pm.on_change.append(lambda: changes.append(pm.generation))
    async with anyio.create_task_group() as tg:
        await tg.start(partial(watch_plugins, pm, **FAST))
        path = plugin_dir / "live.py"
        path.write_text(plugin("v1"))
        await wait_until(lambda: output(pm) == "x-v1")
        first = pm.postprocessors()[0]

        path.write_text(plugin("v2"))
        await wait_until(lambda: output(pm) == "x-v2")
        assert pm.loads["live"] == 2 and changes
        with pytest.raises(PluginFailed, match="earlier load"):
            pm.guarded_sync(first, "process", "x", None)
        assert status(pm, "live") == "enabled"  # the stale handle did not block the new version

        path.write_text(BROKEN)
        await wait_until(lambda: status(pm, "live") == "blocked")
        assert pm.postprocessors() == []  # the previous good version is gone too
        [info] = [i for i in pm.report() if i.name == "live"]
        assert "SyntaxError" in info.reason and f"{path}:" in info.reason

        path.write_text(plugin("v3"))
        await wait_until(lambda: output(pm) == "x-v3")
        assert status(pm, "live") == "enabled"

        path.unlink()
        await wait_until(lambda: status(pm, "live") is None)
        assert pm.postprocessors() == [] and "exlsp_local_plugins.live" not in sys.modules
        tg.cancel_scope.cancel()


async def test_watches_a_folder_that_appears_later_and_vanishes(config_home, tmp_path):
    extra = tmp_path / "extra"
    pm = PluginManager(local_dirs=[extra], entry_points=False)
    async with anyio.create_task_group() as tg:
        await tg.start(partial(watch_plugins, pm, **FAST))  # load() is called for us
        assert pm.generation == 1
        extra.mkdir()
        (extra / "late.py").write_text(plugin("late"))
        await wait_until(lambda: output(pm) == "x-late")

        shutil.rmtree(extra)
        await wait_until(lambda: status(pm, "late") is None)

        default = config_home / "exlsp" / "plugins"
        default.mkdir(parents=True)
        (default / "again.py").write_text(plugin("agai"))
        await wait_until(lambda: output(pm) == "x-agai")
        tg.cancel_scope.cancel()


def test_reload_local_and_sync_local_on_demand(plugin_dir):
    path = plugin_dir / "p.py"
    path.write_text(plugin("v1"))
    pm = PluginManager(entry_points=False)
    pm.load()
    generation = pm.generation
    assert pm.sync_local() == [] and pm.generation == generation  # nothing changed

    path.write_text(plugin("v2"))  # same size, probably the same mtime second
    assert pm.sync_local() == ["p"] and output(pm) == "x-v2"
    assert pm.generation == generation + 1

    assert pm.reload_local() == ["p"]  # forced: unchanged files are re-imported too
    assert pm.loads["p"] == 3 and output(pm) == "x-v2"

    (plugin_dir / "q.py").write_text(plugin("q1"))
    path.unlink()
    assert pm.reload_local() == ["p", "q"]
    assert [i.name for i in pm.report()] == ["q"]


def test_runtime_blocked_file_plugin_comes_back_when_fixed(plugin_dir):
    path = plugin_dir / "p.py"
    path.write_text(plugin("v1"))
    pm = PluginManager(entry_points=False)
    pm.load()
    pm.block("p", "misbehaved")
    assert status(pm, "p") == "blocked" and pm.sync_local() == []  # same file: stays blocked
    path.write_text(plugin("v2"))
    assert pm.sync_local() == ["p"] and status(pm, "p") == "enabled"


async def test_falls_back_to_polling_when_the_watcher_fails(plugin_dir, monkeypatch):
    async def no_inotify(*paths, **kwargs):
        raise OSError(28, "inotify watch limit reached")
        yield  # an async generator, like awatch

    monkeypatch.setattr(reload_module, "awatch", no_inotify)
    pm = PluginManager(entry_points=False)
    async with anyio.create_task_group() as tg:
        await tg.start(partial(watch_plugins, pm, **FAST))
        (plugin_dir / "polled.py").write_text(plugin("poll"))
        await wait_until(lambda: output(pm) == "x-poll")
        assert any("polling every 0.1 s" in w for w in pm.warnings)
        tg.cancel_scope.cancel()
