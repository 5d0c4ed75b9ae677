// runChat / sendAccept against an in-memory JSON-RPC peer: the wire behaviour without a model.
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';

import {
  CancellationTokenSource,
  createProtocolConnection,
  ProtocolConnection,
  ResponseError,
  StreamMessageReader,
  StreamMessageWriter,
  WorkDoneProgress,
} from 'vscode-languageserver-protocol/node';

import { insertedChars, isCancellation, newWorkDoneToken, runChat, sendAccept, waitUntilReady } from '../../src/lib/protocol';

function pair(): { client: ProtocolConnection; server: ProtocolConnection } {
  const a = new PassThrough();
  const b = new PassThrough();
  const client = createProtocolConnection(new StreamMessageReader(a), new StreamMessageWriter(b));
  const server = createProtocolConnection(new StreamMessageReader(b), new StreamMessageWriter(a));
  client.listen();
  server.listen();
  return { client, server };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('runChat over JSON-RPC', () => {
  it('streams work-done progress deltas and returns the result', async () => {
    const { client, server } = pair();
    let seen: { workDoneToken?: string } = {};
    server.onRequest('exlsp/chat', async (params: { workDoneToken: string }) => {
      seen = params;
      const t = params.workDoneToken;
      await server.sendProgress(WorkDoneProgress.type, t, { kind: 'begin', title: 'exlsp chat', cancellable: true });
      for (const d of ['Hello', ', ', 'world']) await server.sendProgress(WorkDoneProgress.type, t, { kind: 'report', message: d });
      await server.sendProgress(WorkDoneProgress.type, t, { kind: 'end', message: 'done' });
      return { text: 'Hello, world', stopReason: 'eos', promptTokens: 5, reusedTokens: 0, generatedTokens: 3 };
    });
    const deltas: string[] = [];
    const out = await runChat(client, { messages: [{ role: 'user', content: 'hi' }] }, { onDelta: (d) => deltas.push(d) });
    assert.ok(typeof seen.workDoneToken === 'string' && seen.workDoneToken.startsWith('exlsp-chat-'));
    assert.deepEqual(deltas, ['Hello', ', ', 'world']);
    assert.equal(out.text, 'Hello, world');
    assert.equal(out.streamedText, 'Hello, world');
    assert.equal(out.cancelled, false);
    assert.equal(out.result?.generatedTokens, 3);
    client.dispose();
    server.dispose();
  });

  it('the Stop button cancels: $/cancelRequest reaches the peer, partial text is kept', async () => {
    const { client, server } = pair();
    let serverSawCancel = false;
    server.onRequest('exlsp/chat', async (params: { workDoneToken: string }, token) => {
      const t = params.workDoneToken;
      await server.sendProgress(WorkDoneProgress.type, t, { kind: 'begin', title: 'exlsp chat' });
      await server.sendProgress(WorkDoneProgress.type, t, { kind: 'report', message: 'partial' });
      while (!token.isCancellationRequested) await sleep(5);
      serverSawCancel = true;
      await server.sendProgress(WorkDoneProgress.type, t, { kind: 'end', message: 'cancelled' });
      return new ResponseError(-32800, 'cancelled');
    });
    const cts = new CancellationTokenSource();
    const out = await runChat(client, { messages: [{ role: 'user', content: 'hi' }] }, {
      token: cts.token,
      onDelta: () => cts.cancel(),
    });
    assert.equal(serverSawCancel, true);
    assert.equal(out.cancelled, true);
    assert.equal(out.text, 'partial');
    client.dispose();
    server.dispose();
  });

  it('other errors reject (InvalidParams)', async () => {
    const { client, server } = pair();
    server.onRequest('exlsp/chat', () => new ResponseError(-32602, 'exlsp/chat: messages must not be empty'));
    await assert.rejects(runChat(client, { messages: [] }), (e: ResponseError<unknown>) => e.code === -32602);
    client.dispose();
    server.dispose();
  });

  it('sendAccept is workspace/executeCommand exlsp.accept with {uri, kind, chars}', async () => {
    const { client, server } = pair();
    let got: unknown;
    server.onRequest('workspace/executeCommand', (p) => {
      got = p;
      return { accepted: 1 };
    });
    assert.deepEqual(await sendAccept(client, { uri: 'file:///a.py', kind: 'word', chars: 4 }), { accepted: 1 });
    assert.deepEqual(got, { command: 'exlsp.accept', arguments: [{ uri: 'file:///a.py', kind: 'word', chars: 4 }] });
    client.dispose();
    server.dispose();
  });

  it('waitUntilReady polls exlsp/status', async () => {
    const { client, server } = pair();
    let calls = 0;
    server.onRequest('exlsp/status', () => ({ ready: ++calls >= 3 }));
    const st = await waitUntilReady(client, 5000, 5);
    assert.equal(st.ready, true);
    assert.equal(calls, 3);
    server.onRequest('exlsp/status', () => ({ ready: false, loadError: 'no model' }));
    await assert.rejects(waitUntilReady(client, 5000, 5), /no model/);
    client.dispose();
    server.dispose();
  });

  it('helpers', () => {
    assert.notEqual(newWorkDoneToken(), newWorkDoneToken());
    assert.equal(isCancellation(new ResponseError(-32800, 'x')), true);
    assert.equal(isCancellation(new ResponseError(-32802, 'x')), true);
    assert.equal(isCancellation(Object.assign(new Error('Canceled'), { name: 'Canceled' })), true);
    assert.equal(isCancellation(new ResponseError(-32602, 'x')), false);
    assert.equal(insertedChars([{ text: 'foo' }, { text: '' }, { text: 'ba' }]), 5);
  });
});
