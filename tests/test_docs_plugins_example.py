"""The example plugin in docs/plugins.md is real: it is cut out of the doc, loaded and run."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from exlsp.plugins import hookspecs
from exlsp.plugins.api import PostContext
from exlsp.plugins.manager import PluginManager

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
EXAMPLE = re.compile(r"<!-- example-plugin:begin -->\s*```python\n(.*?)```\s*<!-- example-plugin:end -->", re.S)


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("EXLSP_PLUGINS", raising=False)
    folder = tmp_path / "exlsp" / "plugins"
    folder.mkdir(parents=True)
    (folder / "strip_trailing_whitespace.py").write_text(EXAMPLE.search(DOC.read_text()).group(1))
    yield folder
    sys.modules.pop("exlsp_local_plugins.strip_trailing_whitespace", None)


def ctx(language: str = "python") -> PostContext:
    return PostContext(prefix="", suffix="", language=language)


def test_the_example_plugin_works(plugin_dir):
    pm = PluginManager(entry_points=False)
    pm.load()
    [info] = pm.report()
    assert (info.name, info.source, info.version) == ("strip_trailing_whitespace", "file", "1.0")
    assert info.status == "enabled"
    assert info.hooks == ["exlsp_default_settings", "exlsp_register_postprocessors"]
    [reg] = pm.postprocessors("completion")
    assert pm.postprocessors("shell") == []
    assert pm.guarded_sync(reg, "process", "x = 1   \n\ty = 2\t\n", ctx(), expect=str) == "x = 1\n\ty = 2\n"
    assert pm.guarded_sync(reg, "process", "line  \nbreak", ctx("markdown"), expect=str) == "line  \nbreak"
    assert pm.warnings == []


def test_the_example_settings_from_the_doc(plugin_dir):
    pm = PluginManager(entry_points=False, settings={"strip_trailing_whitespace": {"skip_languages": ["python"]}})
    pm.load()
    [reg] = pm.postprocessors("chat")
    assert pm.guarded_sync(reg, "process", "a  ", ctx("python")) == "a  "
    assert pm.guarded_sync(reg, "process", "a  ", ctx("markdown")) == "a"


def test_the_doc_names_every_hook():
    text = DOC.read_text()
    hooks = [name for name in vars(hookspecs) if name.startswith("exlsp_")]
    assert hooks and [h for h in hooks if f"`{h}(" not in text] == []
