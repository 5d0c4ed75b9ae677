import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ExlspStatus, formatStatusBar, formatPercent, formatTokensPerSecond, shortModelName, statusDetails } from '../../src/lib/status';

const READY: ExlspStatus = {
  ready: true,
  model: '/home/u/.cache/models/SmolLM2-135M-Instruct-Q4_1.gguf',
  backend: 'llamacpp',
  n_ctx: 2048,
  lanes: [
    { lane: 0, group: 'completion', tokens: 10, hits: 1 },
    { lane: 1, group: 'completion', tokens: 0, hits: 0 },
    { lane: 2, group: 'chat', tokens: 0, hits: 0 },
  ],
  cache_hit_rate: 0.4567,
  decode_tok_s: 312.44,
  accepted: 3,
  accepted_by_kind: { completion: 2, word: 1 },
  requests: { completions: 7, chats: 1, suggestions: 0 },
};

describe('status bar', () => {
  it('shows model, tokens/s and cache hit rate when idle', () => {
    const v = formatStatusBar(READY, 'running', 0);
    assert.equal(v.text, '$(sparkle) SmolLM2-135M-Instruct-Q4_1 · 312 tok/s · 46% cached');
    assert.match(v.tooltip, /Backend: llamacpp \(context 2048 tokens\)/);
    assert.match(v.tooltip, /KV lanes: 3 \(2 completion, 1 chat\)/);
    assert.match(v.tooltip, /Accepted: 3 \(2 completion, 1 word\)/);
    assert.match(v.tooltip, /Idle/);
  });

  it('spins while a request is in flight', () => {
    const v = formatStatusBar(READY, 'running', 2);
    assert.ok(v.text.startsWith('$(loading~spin) '), v.text);
    assert.match(v.tooltip, /2 request\(s\) in flight/);
  });

  it('leaves out numbers the server has not measured yet', () => {
    const v = formatStatusBar({ ready: true, model: 'm.gguf', cache_hit_rate: 0, decode_tok_s: 0 }, 'running', 0);
    assert.equal(v.text, '$(sparkle) m');
  });

  it('says loading, failed, missing, stopped', () => {
    assert.equal(formatStatusBar({ ready: false }, 'running', 0).text, '$(loading~spin) exlsp: loading');
    const failed = formatStatusBar({ ready: false, loadError: 'bad gguf' }, 'running', 0);
    assert.equal(failed.text, '$(error) exlsp');
    assert.match(failed.tooltip, /bad gguf/);
    assert.equal(formatStatusBar(undefined, 'missing', 0, 'not found').text, '$(error) exlsp: not found');
    assert.equal(formatStatusBar(undefined, 'missing', 0, 'not found').tooltip, 'not found');
    assert.equal(formatStatusBar(READY, 'stopped', 0).text, '$(circle-slash) exlsp');
    assert.equal(formatStatusBar(undefined, 'starting', 0).text, '$(loading~spin) exlsp');
  });

  it('formats names and numbers', () => {
    assert.equal(shortModelName('C:\\models\\Coder.GGUF'), 'Coder');
    assert.equal(shortModelName('/models/qwen2.5-coder-7b-instruct-exl2/'), 'qwen2.5-coder-7b-instruct-e…');
    assert.equal(shortModelName(undefined), 'exlsp');
    assert.equal(formatTokensPerSecond(57.25), '57.3 tok/s');
    assert.equal(formatTokensPerSecond(0), undefined);
    assert.equal(formatPercent(1.5), '100%');
    assert.equal(formatPercent(undefined), undefined);
  });

  it('details list requests and rates', () => {
    const lines = statusDetails(READY);
    assert.ok(lines.includes('Requests: 7 completions, 1 chats, 0 shell suggestions'), lines.join('\n'));
    assert.ok(lines.includes('Cache hit rate: 46% of prompt tokens reused'));
    assert.deepEqual(statusDetails(undefined), ['No status from the server yet.']);
  });
});
