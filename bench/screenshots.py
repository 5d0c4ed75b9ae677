"""Regenerate the screenshots in docs/images/ from the real editor and the real default model.

    .venv/bin/python bench/screenshots.py [--out docs/images] [--only nvim-ghost,nvim-chat,vscode-chat]

Needs tmux, Neovim 0.12 (.venv/bin/nvim, from the dev extras), headless Chromium
(`apt-get install chromium`) and, for the VS Code chat panel, node and the compiled extension
(editors/vscode/out/, `npm run build` there). Not part of the test suite.

- nvim-ghost.png: Neovim 0.12 with tests/data/editors/nvim-native.lua as its whole config (the
  snippet of editors/README.md), in tmux; the user types and exlsp's ghost text appears.
- nvim-chat.png: the Neovim plugin (editors/nvim) answering `:ExlspChat /explain` on a range.
- vscode-chat.png: the VS Code chat webview (editors/vscode/out/src/lib/webviewHtml.js, its
  media/chat.js and chat.css, VS Code's Dark Modern colours) showing the conversation recorded
  from the Neovim chat above.

Terminal screens are captured with `tmux capture-pane -e` (SGR colours), turned into HTML by the
small converter below and photographed by headless Chromium. Each editor runs against its own
`exlsp serve` (private XDG directories in a temporary folder), so no running exlsp is touched.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNIPPETS = ROOT / "tests" / "data" / "editors"
PLUGIN = ROOT / "editors" / "nvim"
VSCODE = ROOT / "editors" / "vscode"

FONT = "'DejaVu Sans Mono', 'Liberation Mono', monospace"
FONT_PX = 14
LINE_PX = 18
CHAR_PX = 8.43  # DejaVu Sans Mono at 14 px; only used to size the window

# What the user has typed before the screenshot; the last line is completed as they type.
GHOST_FILE = '''import math


def is_prime(n: int) -> bool:
    """Return True if n is a prime number."""
    if n < 2:
        return False
    for'''
GHOST_TYPED = " i"

CHAT_FILE = '''import math


def is_prime(n: int) -> bool:
    """Return True if n is a prime number."""
    if n < 2:
        return False
    for i in range(2, int(math.sqrt(n)) + 1):
        if n % i == 0:
            return False
    return True
'''
CHAT_COMMAND = ":4,11ExlspChat /explain"


# --------------------------------------------------------------------------- ANSI -> HTML

XTERM16 = [
    "#000000", "#cd0000", "#00cd00", "#cdcd00", "#0000ee", "#cd00cd", "#00cdcd", "#e5e5e5",
    "#7f7f7f", "#ff0000", "#00ff00", "#ffff00", "#5c5cff", "#ff00ff", "#00ffff", "#ffffff",
]


def xterm256(n: int) -> str:
    if n < 16:
        return XTERM16[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return "#%02x%02x%02x" % (steps[n // 36], steps[(n // 6) % 6], steps[n % 6])
    v = 8 + 10 * (n - 232)
    return "#%02x%02x%02x" % (v, v, v)


SGR = re.compile(r"\x1b\[([0-9;:]*)m")
OTHER_ESC = re.compile(r"\x1b(?:\[[0-9;?]*[A-Za-ln-z]|\][^\x07]*\x07|[()][A-Za-z0-9])")


class Style:
    __slots__ = ("fg", "bg", "bold", "dim", "italic", "underline", "reverse", "strike")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.fg = self.bg = None
        self.bold = self.dim = self.italic = self.underline = self.reverse = self.strike = False

    def copy(self) -> Style:
        s = Style()
        for k in self.__slots__:
            setattr(s, k, getattr(self, k))
        return s

    def apply(self, params: str) -> None:
        codes = [int(p) if p.isdigit() else 0 for p in re.split(r"[;:]", params)] if params else [0]
        i = 0
        while i < len(codes):
            c = codes[i]
            if c == 0:
                self.reset()
            elif c == 1:
                self.bold = True
            elif c == 2:
                self.dim = True
            elif c == 3:
                self.italic = True
            elif c in (4, 21):
                self.underline = True
            elif c == 7:
                self.reverse = True
            elif c == 9:
                self.strike = True
            elif c == 22:
                self.bold = self.dim = False
            elif c == 23:
                self.italic = False
            elif c == 24:
                self.underline = False
            elif c == 27:
                self.reverse = False
            elif c == 29:
                self.strike = False
            elif 30 <= c <= 37:
                self.fg = XTERM16[c - 30]
            elif 90 <= c <= 97:
                self.fg = XTERM16[c - 90 + 8]
            elif 40 <= c <= 47:
                self.bg = XTERM16[c - 40]
            elif 100 <= c <= 107:
                self.bg = XTERM16[c - 100 + 8]
            elif c == 39:
                self.fg = None
            elif c == 49:
                self.bg = None
            elif c in (38, 48, 58) and i + 1 < len(codes):
                color = None
                if codes[i + 1] == 5 and i + 2 < len(codes):
                    color = xterm256(codes[i + 2])
                    i += 2
                elif codes[i + 1] == 2 and i + 4 < len(codes):
                    color = "#%02x%02x%02x" % tuple(codes[i + 2:i + 5])
                    i += 4
                if c == 38:
                    self.fg = color
                elif c == 48:
                    self.bg = color
            i += 1

    def css(self, fg: str, bg: str) -> str:
        f, b = self.fg or fg, self.bg or bg
        if self.reverse:
            f, b = b, f
        out = [f"color:{f}"]
        if b != bg or self.reverse:
            out.append(f"background:{b}")
        if self.bold:
            out.append("font-weight:bold")
        if self.dim:
            out.append("opacity:.6")
        if self.italic:
            out.append("font-style:italic")
        deco = [d for d, on in (("underline", self.underline), ("line-through", self.strike)) if on]
        if deco:
            out.append("text-decoration:" + " ".join(deco))
        return ";".join(out)


def ansi_lines_to_html(lines: list[str], fg: str, bg: str, cursor: tuple[int, int] | None = None) -> str:
    """Lines of `tmux capture-pane -e -p` -> one <div> per line of styled spans. The style carries
    over from line to line, as in the terminal. ``cursor`` = (column, row): that cell is drawn
    as a bar cursor."""
    out = []
    style = Style()
    for row, line in enumerate(lines):
        line = OTHER_ESC.sub("", line)
        cells: list[tuple[str, Style]] = []
        pos = 0
        for m in SGR.finditer(line):
            cells.extend((ch, style.copy()) for ch in line[pos:m.start()])
            style.apply(m.group(1))
            pos = m.end()
        cells.extend((ch, style.copy()) for ch in line[pos:])
        if cursor and cursor[1] == row:
            while len(cells) <= cursor[0]:
                cells.append((" ", Style()))
        parts: list[str] = []
        run_css, run_text = None, ""
        for col, (ch, st) in enumerate(cells):
            css = st.css(fg, bg)
            if cursor is not None and (col, row) == cursor:
                if run_text:
                    parts.append(f'<span style="{run_css}">{run_text}</span>')
                run_css, run_text = None, ""
                parts.append(f'<span class="cursor" style="{css}">{html.escape(ch)}</span>')
            elif css == run_css:
                run_text += html.escape(ch)
            else:
                if run_text:
                    parts.append(f'<span style="{run_css}">{run_text}</span>')
                run_css, run_text = css, html.escape(ch)
        if run_text:
            parts.append(f'<span style="{run_css}">{run_text}</span>')
        out.append(f'<div class="l">{"".join(parts) or "&nbsp;"}</div>')
    return "".join(out)


def terminal_page(body: str, fg: str, bg: str, title: str) -> str:
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
html, body {{ margin: 0; background: #0b0c0f; }}
.term {{ margin: 0; padding: 10px 12px; background: {bg}; color: {fg};
        font-family: {FONT}; font-size: {FONT_PX}px; line-height: {LINE_PX}px;
        white-space: pre; font-variant-ligatures: none; }}
.l {{ height: {LINE_PX}px; }}
.cursor {{ box-shadow: inset 2px 0 0 {fg}; }}
</style></head>
<body><div class="term">{body}</div></body></html>
"""


# --------------------------------------------------------------------------- tools


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html_file: Path, png: Path, width: int, height: int, tmp: Path) -> None:
    exe = chromium()
    if exe is None:
        raise SystemExit("chromium not found: apt-get install -y chromium")
    profile = tmp / f"chromium-{png.stem}"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", "--force-device-scale-factor=1", f"--user-data-dir={profile}",
           f"--screenshot={png}", f"--window-size={width},{height}", html_file.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not png.exists():
        raise SystemExit(f"chromium failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    print(f"  {png} ({png.stat().st_size // 1024} KB, {width}x{height})")


class Session:
    """Neovim in its own tmux server (own socket), with private XDG directories, so its
    `exlsp serve` owns a model of its own."""

    def __init__(self, tmp: Path, name: str, cols: int, rows: int) -> None:
        self.dir = tmp / name
        self.dir.mkdir()
        self.sock = self.dir / "tmux.sock"
        self.nvim_sock = self.dir / "nvim.sock"
        self.cols, self.rows = cols, rows
        xdg = self.dir / "xdg"
        for sub in ("config", "state", "data", "cache", "run"):
            (xdg / sub).mkdir(parents=True)
        (xdg / "run").chmod(0o700)
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `exlsp` as the snippets name it
            "XDG_CONFIG_HOME": str(xdg / "config"),
            "XDG_STATE_HOME": str(xdg / "state"),
            "XDG_DATA_HOME": str(xdg / "data"),
            "XDG_CACHE_HOME": str(xdg / "cache"),
            "XDG_RUNTIME_DIR": str(xdg / "run"),
            "COLORTERM": "truecolor",
        }
        self.env.pop("TMUX", None)
        self.env.pop("NVIM", None)

    def tmux(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(["tmux", "-S", str(self.sock), *args], env=self.env, capture_output=True,
                              text=True, timeout=30)
        if check and proc.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {proc.stderr}")
        return proc.stdout

    def start(self, argv: list[str]) -> None:
        shell_cmd = " ".join(_quote(a) for a in argv)
        conf = self.dir / "tmux.conf"  # read before the pane starts: its TERM, no status line
        conf.write_text('set -g default-terminal "tmux-256color"\nset -g status off\n')
        self.tmux("-f", str(conf), "new-session", "-d", "-x", str(self.cols), "-y", str(self.rows),
                  "-c", str(self.dir), shell_cmd)

    def expr(self, expr: str) -> str:
        try:
            proc = subprocess.run([str(nvim()), "--server", str(self.nvim_sock), "--remote-expr", expr],
                                  env=self.env, capture_output=True, text=True, timeout=10)
        except subprocess.TimeoutExpired:
            return ""
        return proc.stdout.strip()

    def wait(self, what: str, expr: str, timeout: float, want: str = "1") -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.nvim_sock.exists():
                last = self.expr(expr)
                if last == want:
                    return
            time.sleep(0.25)
        raise SystemExit(f"timed out waiting for {what} (last answer {last!r})\n{self.capture(False)}")

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.tmux("send-keys", *(["-l"] if literal else []), *keys)

    def capture(self, escapes: bool = True) -> str:
        return self.tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", "0")

    def cursor(self) -> tuple[int, int]:
        x, y = self.tmux("display-message", "-p", "-t", "0", "#{cursor_x} #{cursor_y}").split()
        return int(x), int(y)

    def stop(self) -> None:
        # Neovim gets SIGHUP and exits; its exlsp serve sees stdin close and follows
        self.tmux("kill-server", check=False)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def nvim() -> Path:
    local = BIN / "nvim"
    if local.exists():
        return local
    found = shutil.which("nvim")
    if not found:
        raise SystemExit("nvim not found (it comes with the dev extras: pip install -e '.[dev]')")
    return Path(found)


def render_terminal(session: Session, png: Path, tmp: Path, title: str, show_cursor: bool = True) -> None:
    text = session.capture()
    lines = text.rstrip("\n").split("\n")[: session.rows]
    # Neovim's default colour scheme (dark): Normal is NvimLightGrey2 on NvimDarkGrey2
    fg, bg = "#e0e2ea", "#14161b"
    body = ansi_lines_to_html(lines, fg, bg, session.cursor() if show_cursor else None)
    page = tmp / f"{png.stem}.html"
    page.write_text(terminal_page(body, fg, bg, title))
    width = int(session.cols * CHAR_PX) + 24 + 2
    height = session.rows * LINE_PX + 20
    screenshot(page, png, width, height, tmp)


# --------------------------------------------------------------------------- the screenshots


def shot_nvim_ghost(out: Path, tmp: Path) -> None:
    s = Session(tmp, "nvim-ghost", cols=84, rows=14)
    (s.dir / "primes.py").write_text(GHOST_FILE)
    try:
        s.start([str(nvim()), "--clean", "-n", "-u", str(SNIPPETS / "nvim-native.lua"),
                 "--listen", str(s.nvim_sock), "-c", "set number", "primes.py"])
        s.wait("the exlsp client", "luaeval(\"#vim.lsp.get_clients({name = 'exlsp'})\")", 30)
        s.keys("G", "A")
        s.keys(GHOST_TYPED, literal=True)
        s.wait("ghost text", "luaeval(\"#vim.tbl_filter(function(m) return m[4].virt_text ~= nil end, "
               "vim.api.nvim_buf_get_extmarks(0, -1, 0, -1, {details = true}))\")", 60)
        time.sleep(0.5)  # let the screen settle
        render_terminal(s, out / "nvim-ghost.png", tmp, "exlsp ghost text in Neovim 0.12")
    finally:
        s.stop()


def shot_nvim_chat(out: Path, tmp: Path, command: str = CHAT_COMMAND) -> dict:
    s = Session(tmp, "nvim-chat", cols=132, rows=40)
    (s.dir / "primes.py").write_text(CHAT_FILE)
    init = s.dir / "init.lua"
    init.write_text(
        f"vim.opt.runtimepath:prepend({json.dumps(str(PLUGIN))})\n"
        "vim.o.number = true\n"
        "-- markdown highlighting for the chat buffer (Neovim bundles the parser)\n"
        "vim.api.nvim_create_autocmd('FileType', { pattern = 'markdown', callback = function() pcall(vim.treesitter.start) end })\n"
        "require('exlsp').setup()\n"
    )
    try:
        s.start([str(nvim()), "--clean", "-n", "-u", str(init), "--listen", str(s.nvim_sock), "primes.py"])
        s.wait("the exlsp client", "luaeval(\"#vim.lsp.get_clients({name = 'exlsp'})\")", 30)
        s.keys(command, "Enter")
        s.wait("the chat answer", "luaeval(\"require('exlsp.chat').state().last ~= nil and "
               "require('exlsp.chat').state().current == nil and 1 or 0\")", 120)
        # show the answer from its question on: the chat window, scrolled to its top
        s.keys("Escape")
        s.keys(":wincmd l | normal! gg", "Enter")
        s.keys(":wincmd h", "Enter")
        s.keys(":echo ''", "Enter")
        time.sleep(0.5)
        record = json.loads(s.expr(
            "luaeval(\"vim.json.encode({messages = require('exlsp.chat').state().messages, "
            "result = require('exlsp.chat').state().last.result})\")"))
        render_terminal(s, out / "nvim-chat.png", tmp, "exlsp chat in Neovim", show_cursor=False)
    finally:
        s.stop()
    (tmp / "conversation.json").write_text(json.dumps(record, indent=2))
    return record


VSCODE_DARK_MODERN = """
:root {
  --vscode-foreground: #cccccc;
  --vscode-font-family: 'DejaVu Sans', system-ui, sans-serif;
  --vscode-font-size: 13px;
  --vscode-editor-font-family: 'DejaVu Sans Mono', monospace;
  --vscode-editor-font-size: 12px;
  --vscode-sideBar-background: #181818;
  --vscode-editorGroupHeader-tabsBackground: #181818;
  --vscode-input-background: #313131;
  --vscode-input-border: #3c3c3c;
  --vscode-input-foreground: #cccccc;
  --vscode-button-background: #0078d4;
  --vscode-button-hoverBackground: #026ec1;
  --vscode-button-foreground: #ffffff;
  --vscode-button-secondaryBackground: #313131;
  --vscode-button-secondaryForeground: #cccccc;
  --vscode-button-secondaryHoverBackground: #3c3c3c;
  --vscode-textCodeBlock-background: #2b2b2b;
  --vscode-textLink-foreground: #4daafc;
  --vscode-panel-border: #2b2b2b;
  --vscode-widget-border: #313131;
  --vscode-errorForeground: #f85149;
  --vscode-focusBorder: #0078d4;
}
html, body { background: #181818; }
"""

VSCODE_RENDER_JS = r"""
// Builds the chat webview page exactly as the extension does (chatHtml + markdown rendering),
// with a stand-in for acquireVsCodeApi that posts the recorded conversation as 'state'.
const fs = require('fs');
const path = require('path');
const [outDir, mediaDir, workDir, recordFile] = process.argv.slice(2);
const { chatHtml } = require(path.join(outDir, 'webviewHtml.js'));
const { renderMarkdown, renderPlain } = require(path.join(outDir, 'markdown.js'));
const { chatFooter } = require(path.join(outDir, 'chat.js'));
const record = JSON.parse(fs.readFileSync(recordFile, 'utf8'));
const turns = record.messages.map((m, i) => {
  const last = i === record.messages.length - 1;
  return {
    role: m.role,
    html: m.role === 'user' ? renderPlain(m.content) : renderMarkdown(m.content, { actions: true }),
    footer: m.role === 'assistant' && last ? chatFooter({ cancelled: false, result: record.result }) : undefined,
    streaming: false,
    error: false,
  };
});
const nonce = 'screenshot0nonce';
const url = (p) => 'file://' + p;
fs.writeFileSync(path.join(workDir, 'stub.js'),
  `window.acquireVsCodeApi = () => ({ postMessage() {}, getState() {}, setState() {} });\n` +
  `window.addEventListener('load', () => window.postMessage(${JSON.stringify({ type: 'state', turns, busy: false })}, '*'));\n` +
  // chat.js scrolls to the end of the conversation; the screenshot starts at the question
  `window.addEventListener('message', () => setTimeout(() => { document.getElementById('log').scrollTop = 0; }, 0));\n`);
let page = chatHtml({ cspSource: 'file:', nonce, scriptUri: url(path.join(mediaDir, 'chat.js')),
                      styleUri: url(path.join(mediaDir, 'chat.css')) });
page = page.replace('</head>', `<link rel="stylesheet" href="${url(path.join(workDir, 'theme.css'))}">\n</head>`);
page = page.replace(/<script nonce=/, `<script nonce="${nonce}" src="${url(path.join(workDir, 'stub.js'))}"></script>\n<script nonce=`);
fs.writeFileSync(path.join(workDir, 'chat.html'), page);
"""


def shot_vscode_chat(out: Path, tmp: Path, record: dict) -> bool:
    lib = VSCODE / "out" / "src" / "lib"
    needed = [lib / "webviewHtml.js", lib / "markdown.js", lib / "chat.js", VSCODE / "media" / "chat.js",
              VSCODE / "media" / "chat.css"]
    missing = [str(p.relative_to(ROOT)) for p in needed if not p.exists()]
    if missing or not shutil.which("node"):
        print(f"  skipped vscode-chat: missing {', '.join(missing) or 'node'} (npm run build in editors/vscode)")
        return False
    work = tmp / "vscode"
    work.mkdir()
    (work / "theme.css").write_text(VSCODE_DARK_MODERN)
    (work / "render.js").write_text(VSCODE_RENDER_JS)
    (work / "record.json").write_text(json.dumps(record))
    subprocess.run(["node", str(work / "render.js"), str(lib), str(VSCODE / "media"), str(work),
                    str(work / "record.json")], check=True, cwd=VSCODE, timeout=60)
    screenshot(work / "chat.html", out / "vscode-chat.png", 440, 880, tmp)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    ap.add_argument("--only", default="nvim-ghost,nvim-chat,vscode-chat")
    ap.add_argument("--chat", default=CHAT_COMMAND, help=f"the Neovim command that asks (default: {CHAT_COMMAND!r})")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (HTML, logs)")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if not shutil.which("tmux"):
        raise SystemExit("tmux not found")
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="exlsp-shots-"))
    try:
        if "nvim-ghost" in only:
            print("nvim-ghost: Neovim 0.12 + tests/data/editors/nvim-native.lua")
            shot_nvim_ghost(args.out, tmp)
        record = None
        if only & {"nvim-chat", "vscode-chat"}:
            print("nvim-chat: the Neovim plugin, :ExlspChat")
            record = shot_nvim_chat(args.out if "nvim-chat" in only else tmp, tmp, args.chat)
            print("  answer:", json.dumps(record["messages"][-1]["content"][:200]), "…")
        if "vscode-chat" in only and record is not None:
            print("vscode-chat: the chat webview of editors/vscode with that conversation")
            shot_vscode_chat(args.out, tmp, record)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
