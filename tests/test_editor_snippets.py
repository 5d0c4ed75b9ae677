"""The editor snippets of editors/README.md: each one is a file in tests/data/editors/, the README
shows it verbatim between ``<!-- snippet:NAME -->`` and ``<!-- /snippet -->``, it parses in its
own language, and the settings it sends as ``initializationOptions`` are ones exlsp accepts
without a warning (and every key is one exlsp knows: unknown keys are silently ignored by the
server, so a typo would otherwise go unnoticed).

The Neovim snippets run in the real Neovim 0.12 (headless, no server started); the Eglot snippet
runs in the real Emacs when there is one (``apt-get install emacs-nox``; Emacs 28 also needs
``elpa-eglot``), and is skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import msgspec
import pytest

from exlsp.lsp.config import ChatSettings, CompletionSettings, Settings, parse_settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "editors" / "README.md"
DATA = ROOT / "tests" / "data" / "editors"
BIN = Path(sys.executable).parent

SNIPPET = re.compile(
    r"^<!-- snippet:(?P<name>[^ ]+) -->\n```(?P<lang>[a-z]*)\n(?P<body>.*?)^```\n<!-- /snippet -->$",
    re.S | re.M,
)
LANGS = {".lua": "lua", ".toml": "toml", ".json": "json", ".el": "elisp", ".rs": "rust"}


def snippet_files() -> list[str]:
    return sorted(str(p.relative_to(DATA)) for p in DATA.rglob("*") if p.is_file())


def readme_snippets() -> dict[str, tuple[str, str]]:
    text = README.read_text()
    found: dict[str, tuple[str, str]] = {}
    for m in SNIPPET.finditer(text):
        assert m["name"] not in found, f"snippet {m['name']} appears twice in {README}"
        found[m["name"]] = (m["lang"], m["body"])
    # every marker is part of a well-formed block (a typo in one would hide the snippet)
    assert text.count("<!-- snippet:") == len(found), "a <!-- snippet:... --> marker without a fenced block"
    assert text.count("<!-- /snippet -->") == len(found)
    return found


def check_settings(options: dict) -> Settings:
    """What the server does with initializationOptions: no warning, and no key it ignores."""
    settings, warnings = parse_settings(options)
    assert warnings == []
    sections = {"completion": CompletionSettings, "chat": ChatSettings}
    unknown = set(options) - set(sections) - {"plugins"}
    assert not unknown, f"unknown settings sections {unknown}"
    for name, cls in sections.items():
        known = {f.encode_name for f in msgspec.structs.fields(cls)}
        assert set(options.get(name, {})) <= known, f"unknown {name} settings {set(options[name]) - known}"
    return settings


# --------------------------------------------------------------------------- README == files


def test_every_snippet_file_is_in_the_readme():
    assert set(readme_snippets()) == set(snippet_files())


@pytest.mark.parametrize("name", snippet_files())
def test_readme_shows_the_file_verbatim(name):
    lang, body = readme_snippets()[name]
    assert body == (DATA / name).read_text(), f"editors/README.md differs from tests/data/editors/{name}"
    assert lang == LANGS[Path(name).suffix]


def test_readme_links_exist():
    """Relative links and images of editors/README.md point at files of this repository
    (vscode/README.md excepted while the extension is being written)."""
    text = README.read_text()
    for target in re.findall(r"\]\(([^)#\s]+)\)", text):
        if target.startswith(("http://", "https://")) or target == "vscode/README.md":
            continue
        assert (README.parent / target).exists(), f"broken link {target}"


# --------------------------------------------------------------------------- Helix


def test_helix_languages_toml():
    conf = tomllib.loads((DATA / "helix-languages.toml").read_text())
    server = conf["language-server"]["exlsp"]
    assert server["command"] == "exlsp" and server["args"] == ["serve"]
    # Helix sends `config` as initializationOptions; it has no inline completion
    settings = check_settings(server["config"])
    assert settings.completion.fallback == "on"
    languages = {lang["name"]: lang for lang in conf["language"]}
    servers = languages["python"]["language-servers"]
    names = [s if isinstance(s, str) else s["name"] for s in servers]
    assert "exlsp" in names


# --------------------------------------------------------------------------- Zed


def test_zed_settings_json():
    conf = json.loads((DATA / "zed-settings.json").read_text())  # plain JSON, no comments
    settings = check_settings(conf["lsp"]["exlsp"]["initialization_options"])
    assert settings.completion.fallback == "on"
    for language, lang_conf in conf["languages"].items():
        assert "exlsp" in lang_conf["language_servers"], language
        assert "..." in lang_conf["language_servers"], f"{language}: the other servers are dropped"


def test_zed_extension_sketch():
    ext = tomllib.loads((DATA / "zed-extension" / "extension.toml").read_text())
    assert ext["schema_version"] == 1 and ext["id"]
    server = ext["language_servers"]["exlsp"]  # the name settings.json's `lsp.exlsp` refers to
    settings = json.loads((DATA / "zed-settings.json").read_text())
    assert set(settings["languages"]) <= set(server["languages"])
    cargo = tomllib.loads((DATA / "zed-extension" / "Cargo.toml").read_text())
    assert cargo["lib"]["crate-type"] == ["cdylib"] and "zed_extension_api" in cargo["dependencies"]
    lib = (DATA / "zed-extension" / "src" / "lib.rs").read_text()
    assert 'which("exlsp")' in lib and 'vec!["serve".into()]' in lib and "register_extension!" in lib


# --------------------------------------------------------------------------- Emacs

EMACS_CHECK = r"""
(progn
  (unless (require 'eglot nil t)
    ;; Debian's elpa-eglot (Emacs 28) lives outside the load-path of `emacs -Q`
    (require 'package)
    (setq package-directory-list (list "/usr/share/emacs/site-lisp/elpa"))
    (package-initialize)
    (unless (require 'eglot nil t)
      (princ "NO-EGLOT")
      (kill-emacs 0)))
  (require 'jsonrpc)
  (load-file (getenv "SNIPPET"))
  (let (out)
    (dolist (mode '(python-mode python-ts-mode))
      ;; Eglot takes the first entry whose modes include the buffer's
      (let* ((entry (seq-find (lambda (e) (memq mode (if (listp (car e)) (car e) (list (car e)))))
                              eglot-server-programs))
             (contact (cdr entry))
             (strings (seq-take-while #'stringp contact))
             (opts (plist-get (nthcdr (length strings) contact) :initializationOptions)))
        (push (vector (symbol-name mode) (vconcat strings) (jsonrpc--json-encode opts)) out)))
    (princ (json-encode (vconcat (nreverse out))))))
"""


def test_emacs_eglot_entry():
    emacs = shutil.which("emacs")
    if emacs is None:
        pytest.skip("emacs not installed (apt-get install -y emacs-nox; on Emacs 28 also elpa-eglot)")
    proc = subprocess.run([emacs, "--batch", "-Q", "--eval", EMACS_CHECK], capture_output=True, text=True,
                          timeout=60, env={"SNIPPET": str(DATA / "emacs-eglot.el"), "PATH": "/usr/bin:/bin",
                                           "HOME": "/nonexistent"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    if proc.stdout == "NO-EGLOT":
        pytest.skip("this Emacs has no Eglot (Emacs 29+, or elpa-eglot on Emacs 28)")
    seen = json.loads(proc.stdout)
    assert [mode for mode, _, _ in seen] == ["python-mode", "python-ts-mode"]
    for mode, program, options in seen:
        assert program == ["exlsp", "serve"], mode
        # the JSON Eglot sends as initializationOptions
        settings = check_settings(json.loads(options))
        assert settings.completion.fallback == "on"


# --------------------------------------------------------------------------- Neovim


def _nvim() -> str | None:
    local = BIN / "nvim"
    if local.exists():
        return str(local)
    return shutil.which("nvim")


def _nvim_lua(tmp_path: Path, lua: str, *args: str) -> dict:
    nvim = _nvim()
    if nvim is None:
        pytest.skip("nvim not found (it comes with the dev extras: pip install -e '.[dev]')")
    out = tmp_path / "out.json"
    script = tmp_path / "check.lua"
    script.write_text(lua.replace("OUT", json.dumps(str(out))))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for sub in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"):
        (tmp_path / sub).mkdir(mode=0o700)
        env[sub] = str(tmp_path / sub)
    proc = subprocess.run([nvim, "--headless", "--clean", "-n", *args, "-c", f"luafile {script}", "-c", "qa!"],
                          capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert out.exists(), f"nvim rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return json.loads(out.read_text())


def test_nvim_native_config(tmp_path):
    got = _nvim_lua(tmp_path, """
local f = assert(io.open(OUT, 'w'))
local c = vim.lsp.config.exlsp
f:write(vim.json.encode({
  version = vim.version().minor,
  cmd = c.cmd,
  filetypes = c.filetypes,
  root_markers = c.root_markers,
  init_options = c.init_options or vim.NIL,
  enabled = vim.lsp.is_enabled('exlsp'),
  inline = vim.lsp.inline_completion.is_enabled(),
  tab = vim.fn.maparg('<Tab>', 'i', false, true).expr,
  next = vim.fn.maparg('<M-]>', 'i') ~= '',
  clients = #vim.lsp.get_clients(),
}))
f:close()
""", "-u", str(DATA / "nvim-native.lua"))
    if got["version"] < 12:
        pytest.skip("needs Neovim 0.12 (vim.lsp.inline_completion)")
    assert got["cmd"] == ["exlsp", "serve"]
    assert "python" in got["filetypes"] and got["root_markers"] == [".git"]
    assert got["enabled"] and got["inline"]
    assert got["tab"] == 1 and got["next"]
    assert got["clients"] == 0  # no file open: nothing started


def test_nvim_native_commented_init_options_are_valid():
    """The commented-out init_options line, uncommented, is valid settings."""
    text = (DATA / "nvim-native.lua").read_text() + (DATA / "nvim-lazy.lua").read_text()
    for line in re.findall(r"init_options = (\{.*\}),", text):
        as_json = re.sub(r"(\w+) = ", r'"\1": ', line)
        check_settings(json.loads(as_json))


def test_nvim_lazy_spec(tmp_path):
    got = _nvim_lua(tmp_path, f"""
local spec = dofile({json.dumps(str(DATA / "nvim-lazy.lua"))})
vim.opt.runtimepath:prepend({json.dumps(str(ROOT / "editors" / "nvim"))})
vim.cmd('runtime plugin/exlsp.lua')
local cmds = {{}}
for _, c in ipairs(spec.cmd) do cmds[c] = vim.fn.exists(':' .. c) == 2 end
local f = assert(io.open(OUT, 'w'))
f:write(vim.json.encode({{ dir = spec.dir, name = spec.name, event = spec.event, cmds = cmds,
  opts = vim.tbl_isempty(spec.opts) and vim.empty_dict() or spec.opts,
  setup = type(require('exlsp').setup) }}))
f:close()
""")
    assert got["dir"].endswith("/editors/nvim") and got["name"] == "exlsp"
    assert got["event"] == ["BufReadPre", "BufNewFile"]
    # lazy.nvim loads the plugin on these commands: the plugin defines them
    assert got["cmds"] == {"ExlspChat": True, "ExlspStatus": True}
    # `opts` goes to require('exlsp').setup(opts), as the plugin's README says
    assert got["opts"] == {} and got["setup"] == "function"
