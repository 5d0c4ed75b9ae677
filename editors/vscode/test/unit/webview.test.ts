import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';

import { chatHtml, contentSecurityPolicy, newNonce } from '../../src/lib/webviewHtml';
import { PACKAGE_ROOT } from '../support';

describe('chat webview shell', () => {
  const nonce = newNonce();
  const html = chatHtml({
    cspSource: 'https://file+.vscode-resource.vscode-cdn.net',
    nonce,
    scriptUri: 'https://file+.vscode-resource.vscode-cdn.net/ext/media/chat.js',
    styleUri: 'https://file+.vscode-resource.vscode-cdn.net/ext/media/chat.css',
  });

  it('has a strict CSP: nonce scripts only, no inline styles, nothing remote', () => {
    const csp = contentSecurityPolicy('https://x', nonce);
    assert.match(csp, /^default-src 'none'/);
    assert.match(csp, new RegExp(`script-src 'nonce-${nonce.replace(/[+/=]/g, (c) => '\\' + c)}'`));
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|https?:\/\/\*|\*/);
    assert.match(html, /http-equiv="Content-Security-Policy"/);
  });

  it('loads exactly one script, with the nonce', () => {
    const scripts = html.match(/<script\b[^>]*>/g) ?? [];
    assert.equal(scripts.length, 1);
    assert.match(scripts[0], new RegExp(`nonce="${nonce.replace(/[+/=]/g, (c) => '\\' + c)}"`));
    assert.doesNotMatch(html, /\son\w+=/); // no inline event handlers
    assert.doesNotMatch(html, /style="/);
  });

  it('offers /explain, /fix and /test on the selection, and a Stop button', () => {
    for (const c of ['explain', 'fix', 'test']) assert.match(html, new RegExp(`data-command="${c}"`));
    assert.match(html, /id="stop"/);
  });

  it('nonces differ', () => {
    assert.notEqual(newNonce(), newNonce());
  });

  it('the webview script posts the messages the extension handles', () => {
    const js = readFileSync(path.join(PACKAGE_ROOT, 'media', 'chat.js'), 'utf8');
    for (const type of ['ready', 'send', 'stop']) assert.match(js, new RegExp(`type: '${type}'`));
    assert.match(js, /data-action/);
    assert.doesNotMatch(js, /eval\(|new Function/);
  });
});
