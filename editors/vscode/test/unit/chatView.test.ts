// The chat panel (src/chatView.ts) with chat sessions, inside the `vscode` stand-in and against a
// scripted connection: what it sends, what it restores, and how it falls back to stateless chat
// when the server keeps no sessions. The real server's side: test/protocol/sessions.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { CancellationToken, ResponseError } from 'vscode-languageserver-protocol';

import * as vscode from '../fakes/vscode';
import { eventually } from '../protocol/harness';

vscode.install();
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { ChatViewProvider, ProposalProvider } = require('../../src/chatView') as typeof import('../../src/chatView');

const { fake } = vscode;
const NO_SESSIONS = 'exlsp/chat: this exlsp process keeps no chat sessions';

interface Sent {
  method: string;
  params: { sessionId?: string; messages?: { role: string; content: string }[]; limit?: number };
}

type Handler = (params: Sent['params'], token?: CancellationToken) => unknown;

/** A connection whose server answers from `handlers` (a method without one: MethodNotFound). */
class ScriptedServer {
  sent: Sent[] = [];
  private progress = new Map<string | number, (value: unknown) => void>();
  constructor(public handlers: Record<string, Handler>) {}

  async sendRequest<R>(method: string, params: Sent['params'], token?: CancellationToken): Promise<R> {
    this.sent.push({ method, params: structuredClone(params) });
    const h = this.handlers[method];
    if (!h) throw new ResponseError(-32601, `Unhandled method ${method}`);
    return (await h(params, token)) as R;
  }

  onProgress(_type: unknown, token: string | number, handler: (value: unknown) => void) {
    this.progress.set(token, handler);
    return { dispose: () => this.progress.delete(token) };
  }

  stream(token: string | number, ...deltas: string[]): void {
    const h = this.progress.get(token);
    h?.({ kind: 'begin', title: 'exlsp chat' });
    for (const d of deltas) h?.({ kind: 'report', message: d });
  }

  chats(): Sent['params'][] {
    return this.sent.filter((s) => s.method === 'exlsp/chat').map((s) => s.params);
  }
}

/** An exlsp/chat handler that answers "answer N" and echoes the session id. */
function answering(server: () => ScriptedServer, echo = true): Handler {
  let n = 0;
  return (p) => {
    const text = `answer ${++n}`;
    server().stream((p as { workDoneToken: string }).workDoneToken, text);
    return { text, stopReason: 'eos', promptTokens: 3, reusedTokens: 0, generatedTokens: 2, ...(echo && p.sessionId ? { sessionId: p.sessionId } : {}) };
  };
}

interface Posted {
  type: string;
  turns?: { role: string; html: string; footer?: string }[];
  notice?: string;
}

function memento() {
  const values = new Map<string, unknown>();
  return { values, get: <T>(k: string) => values.get(k) as T | undefined, update: async (k: string, v: unknown) => void values.set(k, v), keys: () => [...values.keys()] };
}

function panel(server: ScriptedServer, state = memento()) {
  const logs: string[] = [];
  const provider = new ChatViewProvider(
    vscode.Uri.file('/ext') as never,
    { connection: () => server as never, notRunningReason: () => 'stopped', busy: () => undefined, refreshStatus: () => undefined, log: (m) => logs.push(m) },
    new ProposalProvider(),
    state as never,
  );
  const posted: Posted[] = [];
  const fromWebview = new vscode.EventEmitter<unknown>();
  const view = {
    webview: {
      options: {},
      html: '',
      cspSource: 'vscode-webview://fake',
      asWebviewUri: (u: vscode.Uri) => u,
      postMessage: async (m: Posted) => (posted.push(m), true),
      onDidReceiveMessage: fromWebview.event,
    },
    onDidDispose: new vscode.EventEmitter<void>().event,
  };
  provider.resolveWebviewView(view as never);
  const lastState = () => posted.filter((m) => m.type === 'state').at(-1);
  const turnCount = () => (provider as unknown as { turns: unknown[] }).turns.length;
  const idle = () => (provider as unknown as { running?: unknown }).running === undefined;
  return { provider, posted, logs, state, lastState, turnCount, idle, send: (m: unknown) => fromWebview.fire(m) };
}

const STORED = {
  session: { id: 'vscode:no-folder', title: 'Hi', created: 1, updated: 2, messageCount: 4 },
  messages: [
    { role: 'user', content: 'Hi', created: 1, complete: true },
    { role: 'assistant', content: 'Hello!', created: 1, complete: true },
    { role: 'user', content: 'Tell a story', created: 2, complete: true },
    { role: 'assistant', content: 'Once upon', created: 2, complete: false },
  ],
};

async function ask(p: ReturnType<typeof panel>, text: string, turnsAfter: number): Promise<void> {
  p.send({ type: 'send', text });
  await eventually(() => (p.turnCount() === turnsAfter && p.idle() ? true : undefined), 5000, `the answer to ${text}`);
}

describe('the chat panel with chat sessions', () => {
  it('restores the workspace session when it opens, then sends only each new turn with the session id', async () => {
    let server!: ScriptedServer;
    server = new ScriptedServer({
      'exlsp/chatSession': (p) => (p.sessionId === 'vscode:no-folder' ? STORED : null),
      'exlsp/chat': answering(() => server),
    });
    const p = panel(server);
    p.send({ type: 'ready' });
    const state = await eventually(() => (p.lastState()?.turns?.length === 4 ? p.lastState() : undefined), 5000, 'the restored turns');
    assert.deepEqual(server.sent[0], { method: 'exlsp/chatSession', params: { sessionId: 'vscode:no-folder', limit: 200 } });
    assert.deepEqual(state?.turns?.map((t) => t.role), ['user', 'assistant', 'user', 'assistant']);
    assert.match(state?.turns?.[3].footer ?? '', /^Incomplete/);
    assert.equal(state?.turns?.[1].footer, undefined);

    await ask(p, 'And then?', 6);
    const [chat] = server.chats();
    assert.equal(server.chats().length, 1);
    assert.deepEqual(chat.messages, [{ role: 'user', content: 'And then?' }]);
    assert.equal(chat.sessionId, 'vscode:no-folder');
    // Reopening the panel does not read the session again (it is shown already).
    p.send({ type: 'ready' });
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(server.sent.filter((s) => s.method === 'exlsp/chatSession').length, 1);
    assert.deepEqual(fake.recorded.errors, []);
  });

  it('"New chat" starts a new session, remembered in the workspace state; "Open Previous Chat" goes back', async () => {
    let server!: ScriptedServer;
    server = new ScriptedServer({
      'exlsp/chatSession': (p) => (p.sessionId === 'vscode:no-folder' ? STORED : null),
      'exlsp/chatSessions': () => ({ sessions: [STORED.session] }),
      'exlsp/chat': answering(() => server),
    });
    const p = panel(server);
    p.send({ type: 'ready' });
    await eventually(() => (p.turnCount() === 4 ? true : undefined), 5000, 'restored');
    p.provider.clear();
    const fresh = p.provider.currentSession();
    assert.match(fresh, /^vscode:no-folder:[0-9a-z]+$/);
    assert.equal(p.state.values.get('exlsp.chat.sessionId'), fresh);
    assert.deepEqual(p.lastState()?.turns, []);
    await ask(p, 'A new topic', 2);
    assert.equal(server.chats().at(-1)?.sessionId, fresh);
    assert.deepEqual(server.chats().at(-1)?.messages, [{ role: 'user', content: 'A new topic' }]);
    assert.equal(server.sent.filter((s) => s.method === 'exlsp/chatSession').length, 1, 'a new session is not read back');

    // A panel made later (VS Code restarted) continues the remembered session.
    const again = panel(server, p.state);
    assert.equal(again.provider.currentSession(), fresh);

    fake.pickAnswers.push((items: { id: string }[]) => items.find((i) => i.id === 'vscode:no-folder'));
    await p.provider.openPrevious();
    assert.deepEqual(fake.recorded.quickPicks.at(-1)?.items.map((i: { id: string }) => i.id), ['vscode:no-folder']);
    assert.equal(p.provider.currentSession(), 'vscode:no-folder');
    assert.equal(p.state.values.get('exlsp.chat.sessionId'), 'vscode:no-folder');
    await eventually(() => (p.lastState()?.turns?.length === 4 ? true : undefined), 5000, 'the old conversation');
  });

  it('"Delete Chat" deletes the current session after confirming, then starts a new one', async () => {
    let server!: ScriptedServer;
    server = new ScriptedServer({
      'exlsp/chatSession': () => STORED,
      'exlsp/chatSessionDelete': () => ({ deleted: true }),
    });
    const p = panel(server);
    p.send({ type: 'ready' });
    await eventually(() => (p.turnCount() === 4 ? true : undefined), 5000, 'restored');
    fake.answers.push(() => undefined); // dismissed: nothing happens
    await p.provider.deleteChat();
    assert.equal(server.sent.filter((s) => s.method === 'exlsp/chatSessionDelete').length, 0);
    fake.answers.push((message, items) => {
      assert.match(message, /delete "Hi"/);
      return items.includes('Delete') ? 'Delete' : undefined;
    });
    await p.provider.deleteChat();
    assert.deepEqual(server.sent.filter((s) => s.method === 'exlsp/chatSessionDelete').map((s) => s.params), [{ sessionId: 'vscode:no-folder' }]);
    assert.notEqual(p.provider.currentSession(), 'vscode:no-folder');
    assert.equal(p.turnCount(), 0);
  });

  it('a server that keeps no sessions: the turn is asked again without one, later turns carry the history', async () => {
    let server!: ScriptedServer;
    const answer = answering(() => server);
    server = new ScriptedServer({
      'exlsp/chatSession': () => null,
      'exlsp/chat': (p, t) => {
        if (p.sessionId) throw new ResponseError(-32602, NO_SESSIONS);
        return answer(p, t);
      },
    });
    const p = panel(server);
    p.send({ type: 'ready' });
    await ask(p, 'q1', 2);
    await ask(p, 'q2', 4);
    const chats = server.chats();
    assert.deepEqual(chats.map((c) => [c.sessionId, c.messages?.map((m) => m.content)]), [
      ['vscode:no-folder', ['q1']],
      [undefined, ['q1']],
      [undefined, ['q1', 'answer 1', 'q2']],
    ]);
    assert.equal(p.lastState()?.turns?.length, 4);
    assert.ok(p.logs.some((l) => l.includes('keeps no chat sessions')), p.logs.join('\n'));
    assert.deepEqual(fake.recorded.errors, []);
  });

  it('an exlsp from before sessions (no exlsp/chatSession, sessionId ignored) gets the stateless chat', async () => {
    let server!: ScriptedServer;
    server = new ScriptedServer({ 'exlsp/chat': answering(() => server, false) });
    const p = panel(server);
    p.send({ type: 'ready' });
    await ask(p, 'q1', 2);
    await ask(p, 'q2', 4);
    assert.deepEqual(server.chats().map((c) => [c.sessionId, c.messages?.length]), [
      [undefined, 1],
      [undefined, 3],
    ]);

    // The same when only the chat answer shows it: exlsp/chatSession exists, sessionId is not echoed.
    let old!: ScriptedServer;
    old = new ScriptedServer({ 'exlsp/chatSession': () => null, 'exlsp/chat': answering(() => old, false) });
    const q = panel(old);
    q.send({ type: 'ready' });
    await ask(q, 'q1', 2);
    await ask(q, 'q2', 4);
    assert.deepEqual(old.chats().map((c) => [c.sessionId, c.messages?.length]), [
      ['vscode:no-folder', 1],
      [undefined, 3],
    ]);
  });

  it('"New chat" while an answer streams stops it, and the old answer does not land in the new chat', async () => {
    let server!: ScriptedServer;
    server = new ScriptedServer({
      'exlsp/chatSession': () => null,
      'exlsp/chat': (p, token) =>
        new Promise((_resolve, reject) => {
          server.stream((p as { workDoneToken: string }).workDoneToken, 'Once');
          token?.onCancellationRequested(() => reject(new ResponseError(-32800, 'cancelled')));
        }),
    });
    const p = panel(server);
    p.send({ type: 'ready' });
    p.send({ type: 'send', text: 'Tell a long story' });
    await eventually(() => (p.turnCount() === 2 && !p.idle() ? true : undefined), 5000, 'streaming');
    const errorsBefore = fake.recorded.errors.length;
    const postedBefore = p.posted.length;
    p.provider.clear();
    await eventually(() => (p.idle() ? true : undefined), 5000, 'the stop');
    await new Promise((r) => setTimeout(r, 80)); // past the render timer
    assert.equal(p.turnCount(), 0);
    assert.deepEqual(p.lastState()?.turns, []);
    const after = p.posted.slice(postedBefore);
    assert.ok(after.some((m) => m.type === 'busy'));
    assert.deepEqual(after.filter((m) => m.type === 'turn'), []);
    assert.equal(fake.recorded.errors.length, errorsBefore, JSON.stringify(fake.recorded.errors));
  });
});
