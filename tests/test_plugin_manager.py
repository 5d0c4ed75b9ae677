"""PluginManager: discovery, allow/block lists, settings, guarded calls, report; the config file.

Every plugin here is a throw-away file written into tmp_path or an object registered from the
test; none depends on the built-in plugins.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import time
from pathlib import Path

import anyio
import msgspec
import pytest

from exlsp.plugins import hookimpl
from exlsp.plugins.manager import PluginFailed, PluginInfo, PluginManager, Registered
from exlsp.plugins.settings import default_plugins_dir, load_config, merge_settings

HEADER = "from exlsp.plugins import hookimpl\n"


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("EXLSP_PLUGINS", raising=False)
    folder = tmp_path / "config" / "exlsp" / "plugins"
    folder.mkdir(parents=True)
    yield folder
    for name in [m for m in sys.modules if m.startswith("exlsp_local_plugins.")]:
        del sys.modules[name]


def write(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(HEADER + textwrap.dedent(body))
    return path


def postprocessor_plugin(name: str, *, order: int = 50, suffix: str = "", kinds: str = "completion") -> str:
    return f"""
        __version__ = "1.2"

        class P:
            name = {name!r}
            order = {order}
            kinds = frozenset({kinds.split(",")!r})

            def process(self, text, ctx):
                return text + {suffix!r}

        @hookimpl
        def exlsp_register_postprocessors(register):
            register(P())
    """


def format_plugin(format_name: str, tag: str) -> str:
    return f"""
        class F:
            name = {format_name!r}
            tag = {tag!r}
            def score(self, model):
                return 1
            def build(self, model, prefix, suffix, context, query):
                return None

        @hookimpl
        def exlsp_register_prompt_formats(register):
            register(F())
    """


def manager(**kwargs) -> PluginManager:
    kwargs.setdefault("entry_points", False)
    pm = PluginManager(**kwargs)
    pm.load()
    return pm


def by_name(pm: PluginManager) -> dict[str, PluginInfo]:
    return {info.name: info for info in pm.report()}


# ---- throw-away plugin objects ---------------------------------------------------------------------


class Upper:
    name = "upper"
    order = 10
    kinds = frozenset({"completion", "chat"})

    def process(self, text, ctx):
        return text.upper()


class Provider:
    kinds = frozenset({"completion"})
    timeout_s = 0.5

    def __init__(self, behaviour="ok"):
        self.name = f"provider_{behaviour}"
        self.behaviour = behaviour

    async def provide(self, query, model):
        if self.behaviour == "hang":
            await anyio.sleep(10)
        if self.behaviour == "raise":
            raise ValueError("boom")
        if self.behaviour == "wrong":
            return 42
        if self.behaviour == "blocking":  # never awaits: the deadline cannot interrupt it
            time.sleep(0.35)
        return ["chunk"]

    def process(self, text, ctx):  # also used as a sync call
        if self.behaviour == "slow":
            time.sleep(0.15)
        return text


def provider_plugin(behaviour: str):
    class Plugin:
        @hookimpl
        def exlsp_register_context_providers(self, register):
            register(Provider(behaviour))

    return Plugin()


class UpperPlugin:
    @hookimpl
    def exlsp_register_postprocessors(self, register):
        register(Upper())


# ---- discovery and registration ----------------------------------------------------------------------


def test_local_file_plugin_is_registered_and_reported(plugin_dir):
    write(plugin_dir, "tail", postprocessor_plugin("tail", suffix="!"))
    pm = manager()
    [reg] = pm.postprocessors()
    assert reg.plugin == "tail" and reg.obj.process("x", None) == "x!"
    assert pm.postprocessors("chat") == [] and len(pm.postprocessors("completion")) == 1
    info = by_name(pm)["tail"]
    assert info == PluginInfo("tail", "file", "1.2", ["exlsp_register_postprocessors"], "enabled", "")
    assert pm.generation == 1 and pm.loads == {"tail": 1}
    # what `exlsp plugins --json` prints
    assert msgspec.json.decode(msgspec.json.encode(pm.report()))[0]["source"] == "file"
    pm.load()  # idempotent
    assert pm.generation == 1 and pm.loads == {"tail": 1}


def test_default_folder_follows_xdg_and_extra_folders_come_after(plugin_dir, tmp_path):
    assert default_plugins_dir() == plugin_dir
    extra = tmp_path / "extra"
    extra.mkdir()
    write(plugin_dir, "a", postprocessor_plugin("a"))
    write(extra, "b", postprocessor_plugin("b"))
    write(extra, "a", postprocessor_plugin("a2"))  # same plugin name: the default folder keeps it
    pm = manager(local_dirs=[extra])
    assert pm.local_dirs == [plugin_dir, extra]
    assert [r.plugin for r in pm.postprocessors()] == ["a", "b"]
    conflict = [i for i in pm.report() if i.name == "a" and i.status == "blocked"]
    assert conflict and "already used" in conflict[0].reason


def test_never_loads_from_the_cwd(plugin_dir, tmp_path, monkeypatch):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    write(workspace, "evil", postprocessor_plugin("evil"))
    monkeypatch.chdir(workspace)
    pm = manager(local_dirs=[Path("."), Path("plugins")])
    assert "evil" not in by_name(pm)
    assert any("relative" in w for w in pm.warnings)


def test_helper_files_are_not_plugins(plugin_dir):
    write(plugin_dir, "_helpers", postprocessor_plugin("h"))
    (plugin_dir / "notes.txt").write_text("x")
    assert by_name(manager()) == {}


def test_later_loaded_plugin_shadows_a_same_named_format(plugin_dir):
    write(plugin_dir, "a_first", format_plugin("qwen", "first"))
    write(plugin_dir, "b_second", format_plugin("qwen", "second"))
    pm = manager()
    [reg] = pm.prompt_formats()
    assert (reg.plugin, reg.obj.tag) == ("b_second", "second")
    assert any("'qwen'" in w and "a_first" in w and "b_second" in w for w in pm.warnings)


def test_registered_objects_come_after_files_and_postprocessors_sort_by_order(plugin_dir):
    write(plugin_dir, "late", postprocessor_plugin("late", order=90))
    pm = manager()
    pm.register_object(UpperPlugin(), "upper_plugin")
    assert [r.obj.name for r in pm.postprocessors()] == ["upper", "late"]
    assert [i.name for i in pm.report()] == ["late", "upper_plugin"]
    assert by_name(pm)["upper_plugin"].source == "object"
    with pytest.raises(ValueError):
        pm.register_object(UpperPlugin(), "upper_plugin")


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        ('order = 1\n    kinds = frozenset({"completion"})', "lacks process"),
        ('order = "5"\n    kinds = ("completion",)\n    process = str', "whose order is a str, expected int"),
        ('order = 5\n    kinds = "completion"\n    process = str', "whose kinds is a str, expected frozenset"),
    ],
)
def test_object_not_following_its_protocol_blocks_the_plugin(plugin_dir, attributes, reason):
    body = f"class Half:\n    name = 'half'\n    {attributes}\n\n"
    body += "@hookimpl\ndef exlsp_register_postprocessors(register):\n    register(Half())\n"
    write(plugin_dir, "half", body)
    info = by_name(manager())["half"]
    assert info.status == "blocked" and reason in info.reason


def test_unknown_hook_and_raising_registration_block(plugin_dir):
    write(plugin_dir, "typo", "@hookimpl\ndef exlsp_register_postprocesors(register):\n    pass\n")
    write(plugin_dir, "raiser", "@hookimpl\ndef exlsp_register_chat_commands(register):\n    raise KeyError('x')\n")
    write(plugin_dir, "good", postprocessor_plugin("good"))
    pm = manager()
    infos = by_name(pm)
    assert infos["typo"].status == "blocked" and "unknown hook exlsp_register_postprocesors" in infos["typo"].reason
    assert infos["raiser"].status == "blocked"
    assert "exlsp_register_chat_commands raised KeyError" in infos["raiser"].reason
    assert [r.plugin for r in pm.postprocessors()] == ["good"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("def broken(:\n    pass\n", "SyntaxError"),
        ("import exlsp_no_such_module_xyz\n", "ModuleNotFoundError: No module named 'exlsp_no_such_module_xyz'"),
        ("\n\nraise RuntimeError('at import')\n", "RuntimeError: at import"),
    ],
)
def test_import_failure_blocks_with_reason_and_others_load(plugin_dir, body, expected):
    path = write(plugin_dir, "broken", body)
    write(plugin_dir, "fine", postprocessor_plugin("fine"))
    pm = manager()
    info = by_name(pm)["broken"]
    assert info.status == "blocked" and info.hooks == []
    assert info.reason.startswith("import failed:") and expected in info.reason
    assert f"{path}:" in info.reason  # where
    assert [r.plugin for r in pm.postprocessors()] == ["fine"]
    assert "exlsp_local_plugins.broken" not in sys.modules


def test_entry_points_builtin_third_party_and_broken(plugin_dir, tmp_path, monkeypatch):
    site = tmp_path / "site"
    info_dir = site / "exlsp_demo_dist-2.3.dist-info"
    info_dir.mkdir(parents=True)
    (info_dir / "METADATA").write_text("Metadata-Version: 2.1\nName: exlsp-demo-dist\nVersion: 2.3\n")
    (info_dir / "entry_points.txt").write_text(
        "[exlsp]\ndemo = exlsp_demo_ep_mod\nbroken_ep = exlsp_demo_ep_missing\n"
    )
    (site / "exlsp_demo_ep_mod.py").write_text(HEADER + textwrap.dedent(postprocessor_plugin("demo")))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    try:
        pm = manager(entry_points=True)
        infos = by_name(pm)
        assert infos["demo"] == PluginInfo(
            "demo", "entry point", "2.3", ["exlsp_register_postprocessors"], "enabled", ""
        )
        assert infos["broken_ep"].status == "blocked" and "No module named" in infos["broken_ep"].reason
        # The built-ins are declared by our own distribution; whether they import yet is not
        # this test's business.
        assert infos["fim"].source == "builtin" and infos["fim"].version
        names = [i.name for i in pm.report()]
        assert names.index("fim") < names.index("demo")
        assert "demo" in [r.plugin for r in pm.postprocessors()]
        assert "fim" not in by_name(manager(entry_points=False))
    finally:
        sys.modules.pop("exlsp_demo_ep_mod", None)


# ---- allow and block lists -----------------------------------------------------------------------------


def test_env_allow_list_limits_what_loads(plugin_dir, monkeypatch):
    write(plugin_dir, "a", postprocessor_plugin("a"))
    write(plugin_dir, "b", postprocessor_plugin("b"))
    monkeypatch.setenv("EXLSP_PLUGINS", " a , nowhere")
    pm = manager(allow=["b"])  # the environment wins over the config
    infos = by_name(pm)
    assert infos["a"].status == "enabled"
    assert (infos["b"].status, infos["b"].reason) == ("disabled", "not in EXLSP_PLUGINS")
    assert "b" not in pm.loads  # never imported
    assert any("'nowhere'" in w for w in pm.warnings)


def test_empty_env_allow_list_loads_nothing(plugin_dir, monkeypatch):
    write(plugin_dir, "a", postprocessor_plugin("a"))
    monkeypatch.setenv("EXLSP_PLUGINS", "")
    pm = manager()
    pm.register_object(UpperPlugin(), "upper_plugin")
    assert pm.postprocessors() == []
    assert {i.status for i in pm.report()} == {"disabled"}


def test_allow_and_block_arguments(plugin_dir):
    for name in "abc":
        write(plugin_dir, name, postprocessor_plugin(name))
    pm = manager(allow=["a", "b"], block=["b"])
    infos = by_name(pm)
    assert [r.plugin for r in pm.postprocessors()] == ["a"]
    assert (infos["b"].status, infos["b"].reason) == ("disabled", "in the block list")
    assert (infos["c"].status, infos["c"].reason) == ("disabled", "not in the allow list")
    assert [r.plugin for r in manager(allow=None).postprocessors()] == ["a", "b", "c"]


# ---- settings ----------------------------------------------------------------------------------------------

SETTINGS_PLUGIN = """
    class P:
        name = "configurable"
        order = 1
        kinds = frozenset({"completion"})
        seen = []

        def configure(self, settings):
            self.seen.append(settings)

        def process(self, text, ctx):
            return text[: self.seen[-1]["max_chars"]]

    @hookimpl
    def exlsp_default_settings():
        return {"max_chars": 3, "mode": "fast", "ratio": 0.5, "on": True}

    @hookimpl
    def exlsp_register_postprocessors(register):
        register(P())
"""


def test_settings_merge_configure_and_update(plugin_dir):
    write(plugin_dir, "conf", SETTINGS_PLUGIN)
    user = {"conf": {"max_chars": 5, "mode": 7, "ratio": 1, "extra": "kept", "on": 1}}
    pm = manager(settings=user)
    assert pm.settings_for("conf") == {"max_chars": 5, "mode": "fast", "ratio": 1, "on": True, "extra": "kept"}
    assert any("mode = 7" in w and "expected str" in w for w in pm.warnings)
    assert any("on = 1" in w for w in pm.warnings)  # an int is no bool
    [reg] = pm.postprocessors()
    assert reg.obj.seen == [pm.settings_for("conf")]
    assert pm.guarded_sync(reg, "process", "abcdefgh", None) == "abcde"
    pm.update_settings({"conf": {"max_chars": 2}})
    assert reg.obj.seen[-1]["max_chars"] == 2 and len(reg.obj.seen) == 2
    pm.update_settings({"conf": {"max_chars": 2}})  # unchanged: not configured again
    assert len(reg.obj.seen) == 2
    assert pm.guarded_sync(reg, "process", "abcdefgh", None) == "ab"
    assert pm.settings_for("unknown") == {}


def test_configure_raising_blocks(plugin_dir):
    write(plugin_dir, "conf", SETTINGS_PLUGIN.replace("self.seen.append(settings)", "1 / settings['max_chars']"))
    pm = manager()
    assert by_name(pm)["conf"].status == "enabled"
    pm.update_settings({"conf": {"max_chars": 0}})
    assert "configure() raised ZeroDivisionError" in by_name(pm)["conf"].reason
    assert pm.postprocessors() == []


def test_merge_settings_rules():
    merged, problems = merge_settings("p", {"n": 1, "xs": ["a"], "d": None}, {"n": 2.5, "xs": ("b",), "d": {}})
    assert merged == {"n": 1, "xs": ("b",), "d": {}}
    assert len(problems) == 1 and "[plugins.p] n = 2.5" in problems[0]


# ---- guarded calls ------------------------------------------------------------------------------------------


def two_providers(behaviour: str, **kwargs) -> tuple[PluginManager, Registered, Registered]:
    pm = PluginManager(entry_points=False, **kwargs)
    pm.register_object(provider_plugin(behaviour), "bad")
    pm.register_object(provider_plugin("ok"), "good")
    bad, good = sorted(pm.context_providers("completion"), key=lambda r: r.plugin)
    return pm, bad, good


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ("raise", "provide() raised ValueError: boom"),
        ("hang", "provide() timed out after 0.1 s"),
        ("wrong", "provide() returned int, expected list or tuple"),
    ],
)
async def test_guarded_failure_blocks_only_that_plugin(plugin_dir, behaviour, reason):
    # strikes=1: a timeout blocks at once, like an exception (the strike rule: test_faults_runtime.py)
    pm, bad, good = two_providers(behaviour, hook_timeout_s=0.1, strikes=1)
    changes = []
    pm.on_change.append(lambda: changes.append(pm.generation))
    start = time.perf_counter()
    with pytest.raises(PluginFailed) as caught:
        await pm.guarded(bad, "provide", None, None, expect=(list, tuple))
    assert time.perf_counter() - start < 1
    assert caught.value.plugin == "bad" and caught.value.reason == reason
    info = by_name(pm)["bad"]
    assert (info.status, info.reason) == ("blocked", reason)
    assert changes and [r.plugin for r in pm.context_providers()] == ["good"]
    assert await pm.guarded(good, "provide", None, None, expect=list) == ["chunk"]
    with pytest.raises(PluginFailed):  # a stale handle is refused, never called
        await pm.guarded(bad, "provide", None, None)


async def test_guarded_timeout_argument_overrides_the_default(plugin_dir):
    pm, bad, _ = two_providers("hang", hook_timeout_s=30)
    with pytest.raises(PluginFailed, match="timed out after 0.05 s"):
        await pm.guarded(bad, "provide", None, None, timeout_s=0.05)


def test_guarded_sync_rules(plugin_dir):
    pm, slow, good = two_providers("slow", hook_timeout_s=0.05, strikes=1)
    with pytest.raises(PluginFailed, match=r"process\(\) timed out after 0.05 s"):
        pm.guarded_sync(slow, "process", "x", None)
    assert by_name(pm)["bad"].status == "blocked"
    assert pm.guarded_sync(good, "process", "x", None, expect=str) == "x"
    with pytest.raises(PluginFailed, match="returned an awaitable"):
        pm.guarded_sync(good, "provide", None, None)
    assert by_name(pm)["good"].status == "blocked"


async def test_coroutine_blocking_the_loop_is_caught_by_the_clock(plugin_dir):
    pm, bad, good = two_providers("blocking", hook_timeout_s=0.1)
    with pytest.raises(PluginFailed, match=r"provide\(\) took \d+\.\d+ s, over its 0.3 s budget"):
        await pm.guarded(bad, "provide", None, None)
    assert await pm.guarded(good, "provide", None, None) == ["chunk"]


async def test_sync_method_through_guarded_is_measured(plugin_dir):
    pm, slow, _ = two_providers("slow", hook_timeout_s=0.05)
    with pytest.raises(PluginFailed, match="timed out after 0.05 s"):  # in a worker thread
        await pm.guarded(slow, "process", "x", None)


# ---- the config file ------------------------------------------------------------------------------------------


def test_load_config_reads_the_plugins_table(plugin_dir, tmp_path):
    path = tmp_path / "config" / "exlsp" / "config.toml"
    path.write_text(
        textwrap.dedent(
            """
            [lsp]
            debounce_ms = 30

            [plugins]
            dirs = ["~/p", "rel", "/abs"]
            allow = ["fim", "mine"]
            block = ["shell"]

            [plugins.mine]
            max_lines = 5
            """
        )
    )
    config = load_config()
    assert config.path == path and config.warnings == []
    assert config.plugins_dirs == [Path("~/p").expanduser(), path.parent / "rel", Path("/abs")]
    assert (config.plugins_allow, config.plugins_block) == (["fim", "mine"], ["shell"])
    assert config.plugin_settings == {"mine": {"max_lines": 5}}
    assert config.raw["lsp"] == {"debounce_ms": 30}


@pytest.mark.parametrize(
    ("text", "warning"),
    [
        ("[plugins\n", "cannot read"),
        ("plugins = 3\n", "must be a table"),
        ("[plugins]\nallow = 'fim'\nblock = [1]\nstray = 2\n", "plugins.allow must be a list"),
    ],
)
def test_load_config_falls_back_with_a_warning(tmp_path, text, warning):
    path = tmp_path / "config.toml"
    path.write_text(text)
    config = load_config(path)
    assert config.plugins_allow is None and config.plugins_block == [] and config.plugin_settings == {}
    assert any(warning in w for w in config.warnings)


def test_load_config_missing_files(plugin_dir, tmp_path):
    assert load_config().warnings == []  # the default file may be absent
    assert "no such config file" in load_config(tmp_path / "nope.toml").warnings[0]


def test_a_same_named_object_replaces_the_other_for_every_kind(plugin_dir):
    write(plugin_dir, "a", postprocessor_plugin("trim", kinds="completion,chat"))
    write(plugin_dir, "b", postprocessor_plugin("trim", kinds="chat", suffix="!"))
    pm = manager()
    assert pm.postprocessors("completion") == []
    assert [r.plugin for r in pm.postprocessors("chat")] == ["b"]
