// The chat webview's HTML shell, with a strict Content-Security-Policy. No `vscode` import here.

import { randomBytes } from 'node:crypto';

import { SLASH_COMMANDS } from './chat';

export function newNonce(): string {
  return randomBytes(16).toString('base64');
}

export interface ShellOptions {
  /** `webview.cspSource` */
  cspSource: string;
  nonce: string;
  scriptUri: string;
  styleUri: string;
}

function attr(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * Only the extension's own script (by nonce) and stylesheet load; no inline styles, no remote
 * content of any kind (images in answers are shown as their alt text), no frames, no forms.
 */
export function contentSecurityPolicy(cspSource: string, nonce: string): string {
  return [
    "default-src 'none'",
    `style-src ${cspSource}`,
    `font-src ${cspSource}`,
    `img-src ${cspSource}`,
    `script-src 'nonce-${nonce}'`,
    "form-action 'none'",
    "base-uri 'none'",
    "frame-src 'none'",
  ].join('; ');
}

export function chatHtml(opts: ShellOptions): string {
  const slash = SLASH_COMMANDS.filter((c) => c.name !== 'doc')
    .map((c) => `<button type="button" class="secondary" data-command="${attr(c.name)}" title="${attr(c.description)}">/${attr(c.name)}</button>`)
    .join('');
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${attr(contentSecurityPolicy(opts.cspSource, opts.nonce))}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${attr(opts.styleUri)}">
<title>exlsp chat</title>
</head>
<body>
<div id="log" role="log" aria-live="polite"></div>
<div id="composer">
<div id="slash">${slash}</div>
<textarea id="input" rows="3" placeholder="Ask exlsp… (Enter sends, Shift+Enter: new line; /explain /fix /test /doc use the selection)"></textarea>
<div id="buttons"><span class="hint">Local model — nothing leaves this machine.</span><button type="button" id="stop" class="secondary hidden">Stop</button><button type="button" id="send">Send</button></div>
</div>
<script nonce="${attr(opts.nonce)}" src="${attr(opts.scriptUri)}"></script>
</body>
</html>`;
}
