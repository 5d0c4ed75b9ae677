// The real `exlsp serve` (the default model, SmolLM2-135M via llama.cpp), driven over stdio with
// vscode-languageserver-protocol exactly as the extension drives it: VS Code's capabilities, the
// settings mapping, the chat/accept/status code of src/lib. Skipped when no exlsp executable is
// found, unless EXLSP_REQUIRE_SERVER=1 (the pytest wrapper sets it).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import {
  CancellationTokenSource,
  InlineCompletionItem,
  InlineCompletionList,
  InlineCompletionTriggerKind,
  ResponseError,
} from 'vscode-languageserver-protocol/node';

import { assembleChat } from '../../src/lib/chat';
import { checkExecutable } from '../../src/lib/executable';
import {
  ACCEPT_COMMAND,
  CHAT_METHOD,
  fetchStatus,
  newWorkDoneToken,
  request,
  runChat,
  sendAccept,
  waitUntilReady,
} from '../../src/lib/protocol';
import { didChangeConfigurationParams } from '../../src/lib/settings';
import { defaultSection } from '../support';
import { eventually, Harness, serverExecutable, startServer, withTimeout } from './harness';

const exe = serverExecutable();
const required = process.env.EXLSP_REQUIRE_SERVER === '1';
if (!exe && required) throw new Error('EXLSP_REQUIRE_SERVER=1 but no exlsp executable (set EXLSP_SERVER or create ../../.venv)');
const skip = exe ? false : 'no exlsp executable: set EXLSP_SERVER or create the repository .venv';

const URI = 'file:///tmp/exlsp-vscode-test/fib.py';
const PREFIX = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if';
const END = { line: 2, character: 6 }; // after "    if" (UTF-16 units)

function items(result: InlineCompletionList | InlineCompletionItem[] | null): InlineCompletionItem[] {
  if (!result) return [];
  return Array.isArray(result) ? result : result.items;
}

describe('exlsp serve, driven like VS Code', { skip, timeout: 180_000 }, () => {
  let h: Harness;
  let version = 1;
  const inline = (triggerKind: InlineCompletionTriggerKind = InlineCompletionTriggerKind.Automatic, position = END, token?: CancellationTokenSource) =>
    request<InlineCompletionList | null>(
      h.conn,
      'textDocument/inlineCompletion',
      { textDocument: { uri: URI }, position, context: { triggerKind } },
      token?.token,
    );

  before(async () => {
    h = await withTimeout(startServer(exe as string), 60_000, 'server start');
  });

  after(async () => {
    if (h) await h.close();
  });

  it('the preflight spawn test accepts the real executable', async () => {
    const check = await checkExecutable(exe as string);
    assert.equal(check.ok, true, JSON.stringify(check));
    assert.match((check.ok && check.version) || '', /^exlsp /);
  });

  it('initialize: inline completion, the exlsp commands, UTF-16 positions', () => {
    const caps = h.init.capabilities;
    assert.ok(caps.inlineCompletionProvider, JSON.stringify(caps));
    assert.deepEqual(
      [...(caps.executeCommandProvider?.commands ?? [])].sort(),
      ['exlsp.accept', 'exlsp.clearCache', 'exlsp.reloadPlugins'],
    );
    assert.equal(caps.positionEncoding ?? 'utf-16', 'utf-16');
  });

  it('the model loads in the background; exlsp/status says when it is ready', async () => {
    const status = await waitUntilReady(h.conn, 60_000, 100);
    assert.equal(status.ready, true);
    assert.equal(status.model_loads, 1);
    assert.ok(status.model, 'model name');
    assert.equal((status.lsp as { positionEncoding?: string }).positionEncoding, 'utf-16');
    // Load progress, if the server reported one (it does when the client is initialized in time).
    for (const token of h.created) {
      const kinds = h.progress.filter((p) => p.token === token).map((p) => p.value.kind);
      assert.equal(kinds[0], 'begin');
      await eventually(() => (h.progress.some((p) => p.token === token && p.value.kind === 'end') ? true : undefined), 5000, 'load progress end');
    }
  });

  it('textDocument/inlineCompletion returns items that carry the exlsp.accept command', async () => {
    await h.conn.sendNotification('textDocument/didOpen', {
      textDocument: { uri: URI, languageId: 'python', version: version++, text: PREFIX },
    });
    let got = items(await inline());
    if (got.length === 0) got = items(await inline(InlineCompletionTriggerKind.Invoked));
    assert.ok(got.length >= 1, 'no inline completion items');
    for (const item of got) {
      const text = typeof item.insertText === 'string' ? item.insertText : item.insertText.value;
      assert.ok(text.trim().length > 0);
      assert.deepEqual(item.range?.start, END);
      assert.equal(item.command?.command, ACCEPT_COMMAND);
      assert.deepEqual(item.command?.arguments, [{ uri: URI, kind: 'completion', chars: text.length }]);
    }
  });

  it('accepting: the item command via workspace/executeCommand counts, so do accept word/line', async () => {
    const [item] = items(await inline());
    assert.ok(item?.command, 'an item with a command');
    // What vscode-languageclient's ExecuteCommandFeature sends when VS Code runs the item's command.
    await h.conn.sendRequest('workspace/executeCommand', { command: item.command.command, arguments: item.command.arguments });
    let status = await fetchStatus(h.conn);
    assert.equal(status.accepted, 1);
    assert.equal(status.accepted_by_kind?.completion, 1);
    // exlsp.acceptWord / exlsp.acceptLine after VS Code's acceptNextWord / acceptNextLine.
    await sendAccept(h.conn, { uri: URI, kind: 'word', chars: 3 });
    await sendAccept(h.conn, { uri: URI, kind: 'line', chars: 12 });
    status = await fetchStatus(h.conn);
    assert.equal(status.accepted, 3);
    assert.deepEqual(status.accepted_by_kind, { completion: 1, word: 1, line: 1 });
  });

  it('a cancelled inline completion (the user typed on) leaves the server healthy', async () => {
    const cts = new CancellationTokenSource();
    const pending = inline(InlineCompletionTriggerKind.Invoked, { line: 0, character: 4 }, cts);
    cts.cancel();
    try {
      await pending;
    } catch (err) {
      assert.equal((err as ResponseError<unknown>).code, -32800);
    }
    assert.equal((await fetchStatus(h.conn)).ready, true);
  });

  it('exlsp/chat streams $/progress deltas that add up to the result text', async () => {
    const { params } = assembleChat({
      history: [],
      input: 'Write a Python function that returns the sum of a list of numbers.',
      workDoneToken: newWorkDoneToken(),
      maxTokens: 24,
    });
    const deltas: string[] = [];
    const out = await withTimeout(runChat(h.conn, params, { onDelta: (d) => deltas.push(d) }), 60_000, 'chat');
    assert.equal(out.cancelled, false);
    assert.ok(out.result, 'a result');
    assert.ok(out.result.text.length > 0, 'an answer');
    assert.ok(deltas.length >= 2, `deltas: ${JSON.stringify(deltas)}`);
    assert.equal(deltas.join(''), out.result.text);
    assert.equal(out.streamedText, out.result.text);
    assert.equal(out.stream, 'done');
    assert.ok(out.result.generatedTokens > 0 && out.result.generatedTokens <= 24, JSON.stringify(out.result));
    assert.ok(out.result.promptTokens > 0);
    assert.ok(['eos', 'stop', 'length', 'time'].includes(out.result.stopReason), out.result.stopReason);
  });

  it('/explain on the selection: the command, the document uri and the range travel', async () => {
    const { params } = assembleChat({
      history: [],
      input: '/explain',
      editor: { uri: URI, selection: { start: { line: 0, character: 0 }, end: END } },
      workDoneToken: newWorkDoneToken(),
      maxTokens: 8,
    });
    const plain = assembleChat({ history: [], input: 'Explain.', workDoneToken: newWorkDoneToken(), maxTokens: 1 });
    const out = await withTimeout(runChat(h.conn, params), 60_000, 'chat /explain');
    const base = await withTimeout(runChat(h.conn, plain.params), 60_000, 'chat');
    assert.equal(out.cancelled, false);
    assert.ok(out.text.length > 0);
    // The server expanded the command around the selected code: a much longer prompt.
    assert.ok((out.result?.promptTokens ?? 0) > (base.result?.promptTokens ?? 0) + 20, `${out.result?.promptTokens} vs ${base.result?.promptTokens}`);
  });

  it('Stop: cancelling the token sends $/cancelRequest, the chat ends and jobs_cancelled increments', async () => {
    const before = (await fetchStatus(h.conn)).jobs_cancelled ?? 0;
    const { params } = assembleChat({
      history: [],
      input: 'Tell a very long story about a robot who learns to program, in many chapters.',
      workDoneToken: newWorkDoneToken(),
      maxTokens: 512,
    });
    const cts = new CancellationTokenSource();
    const out = await withTimeout(runChat(h.conn, params, { token: cts.token, onDelta: () => cts.cancel() }), 60_000, 'cancelled chat');
    assert.equal(out.cancelled, true);
    assert.ok(out.streamedText.length > 0);
    assert.equal(out.stream, 'cancelled');
    const after = await eventually(async () => {
      const n = (await fetchStatus(h.conn)).jobs_cancelled ?? 0;
      return n >= before + 1 ? n : undefined;
    }, 15_000, 'jobs_cancelled to increment');
    assert.ok(after >= before + 1);
  });

  it('invalid chat params get InvalidParams (-32602)', async () => {
    for (const bad of [{ messages: 5 }, { messages: [] }, { messages: [{ role: 'wizard', content: 'x' }] }, {}]) {
      await assert.rejects(h.conn.sendRequest(CHAT_METHOD, bad), (e: ResponseError<unknown>) => {
        assert.equal(e.code, -32602, `${JSON.stringify(bad)}: ${e.message}`);
        return true;
      });
    }
    await assert.rejects(runChat(h.conn, { messages: [] }), (e: ResponseError<unknown>) => e.code === -32602);
  });

  it('settings via didChangeConfiguration take effect: completion.enabled false -> no items', async () => {
    const section = defaultSection() as { completion: Record<string, unknown> };
    const skippedBefore = Number(((await fetchStatus(h.conn)).lsp as Record<string, number>).skipped ?? 0);
    await h.conn.sendNotification(
      'workspace/didChangeConfiguration',
      didChangeConfigurationParams({ ...section, completion: { ...section.completion, enabled: false } }),
    );
    assert.deepEqual(items(await inline(InlineCompletionTriggerKind.Invoked)), []);
    assert.deepEqual(items(await inline()), []);
    const lsp = (await fetchStatus(h.conn)).lsp as Record<string, number>;
    assert.equal(lsp.skipped, skippedBefore + 2);
    await h.conn.sendNotification('workspace/didChangeConfiguration', didChangeConfigurationParams(section));
    assert.ok(items(await inline()).length >= 1, 'completions back after enabling');
    assert.deepEqual(h.messages.filter((m) => m.type <= 2), [], 'no warnings or errors shown');
  });

  it('shutdown and exit end the server cleanly', async () => {
    const code = await h.close();
    assert.equal(code, 0);
    assert.doesNotMatch(h.stderr(), /Traceback/);
  });
});
