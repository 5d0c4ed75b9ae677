// The chat-session logic of src/lib/sessions.ts and the session requests of src/lib/protocol.ts
// (against an in-memory JSON-RPC peer), no server.
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';

import {
  createProtocolConnection,
  ProtocolConnection,
  ResponseError,
  StreamMessageReader,
  StreamMessageWriter,
} from 'vscode-languageserver-protocol/node';

import { assembleChat, Turn } from '../../src/lib/chat';
import { deleteSession, getSession, listSessions } from '../../src/lib/protocol';
import {
  INCOMPLETE_FOOTER,
  isSessionId,
  newSessionId,
  omittedNotice,
  relativeTime,
  restoredTurns,
  SessionInfo,
  sessionPicks,
  sessionsUnavailable,
  workspaceSessionId,
} from '../../src/lib/sessions';

describe('session ids', () => {
  it('one per workspace: stable, different per workspace, valid for the server', () => {
    const a = workspaceSessionId('file:///home/u/proj');
    assert.equal(a, workspaceSessionId('file:///home/u/proj'));
    assert.notEqual(a, workspaceSessionId('file:///home/u/other'));
    assert.match(a, /^vscode:[0-9a-f]{16}$/);
    assert.equal(workspaceSessionId(undefined), 'vscode:no-folder');
    assert.ok(isSessionId(a) && isSessionId(workspaceSessionId(undefined)));
  });

  it('"New chat" ids extend the workspace id and differ each time', () => {
    const base = workspaceSessionId('file:///w');
    const one = newSessionId(base, 1_700_000_000_000, 'a1b2c3');
    assert.equal(one, `${base}:${(1_700_000_000_000).toString(36)}a1b2c3`);
    assert.ok(isSessionId(one));
    assert.notEqual(newSessionId(base), newSessionId(base));
    assert.throws(() => newSessionId('x'.repeat(128)), /not a valid session id/);
  });

  it('isSessionId follows the server rule', () => {
    for (const ok of ['rebase', 'proj/feature-12', '_x', 'a'.repeat(128), 'vscode:1f:2', 'a@b+c=d.e']) assert.ok(isSessionId(ok), ok);
    for (const bad of ['', '-x', ':x', 'a b', 'a'.repeat(129), 'é', 5, undefined]) assert.equal(isSessionId(bad), false, String(bad));
  });
});

describe('sessionsUnavailable', () => {
  it('MethodNotFound and "keeps no chat sessions" mean no sessions', () => {
    assert.ok(sessionsUnavailable(new ResponseError(-32601, 'Unhandled method exlsp/chatSession')));
    assert.ok(sessionsUnavailable(new ResponseError(-32602, 'exlsp/chat: this exlsp process keeps no chat sessions')));
    assert.ok(sessionsUnavailable({ code: -32602, message: 'chat sessions are not available here' }));
  });

  it('other errors about a session are errors of that turn', () => {
    assert.equal(sessionsUnavailable(new ResponseError(-32602, "exlsp/chat: the request adds no message to session 'x': send the new user turn")), false);
    assert.equal(sessionsUnavailable(new ResponseError(-32602, "exlsp/chat: sessionId: invalid session id '-x': 1-128 characters")), false);
    assert.equal(sessionsUnavailable(new ResponseError(-32602, 'a message longer than 1000000 characters is not kept in a session')), false);
    assert.equal(sessionsUnavailable(new ResponseError(-32603, 'keeps no chat sessions')), false);
    assert.equal(sessionsUnavailable(new Error('keeps no chat sessions')), false);
    assert.equal(sessionsUnavailable(undefined), false);
  });
});

describe('assembleChat with a session', () => {
  const history: Turn[] = [
    { role: 'user', content: 'first' },
    { role: 'assistant', content: 'one' },
  ];

  it('sends only the new turn and the session id (the server has the history)', () => {
    const a = assembleChat({ history, input: '/Fix the loop', sessionId: 'vscode:abc', editor: { uri: 'file:///a.py' }, workDoneToken: 't' });
    assert.deepEqual(a.params, {
      messages: [{ role: 'user', content: '/fix the loop' }],
      textDocument: { uri: 'file:///a.py' },
      workDoneToken: 't',
      sessionId: 'vscode:abc',
    });
  });

  it('without one, the history travels as before', () => {
    const a = assembleChat({ history, input: 'next' });
    assert.deepEqual(a.params.messages.map((m) => m.content), ['first', 'one', 'next']);
    assert.equal('sessionId' in a.params, false);
  });
});

describe('restoring a stored session', () => {
  const session = (n: number): SessionInfo => ({ id: 's', title: 'Hi there', created: 1, updated: 2, messageCount: n });

  it('user and assistant turns; system messages hidden; a cut-short answer shows as incomplete', () => {
    const r = restoredTurns({
      session: session(5),
      messages: [
        { role: 'system', content: 'Be brief.', created: 1, complete: true },
        { role: 'user', content: 'Hi there', created: 1, complete: true },
        { role: 'assistant', content: 'Hello!', created: 1, complete: true },
        { role: 'user', content: 'Tell a story', created: 2, complete: true },
        { role: 'assistant', content: 'Once upon', created: 2, complete: false },
      ],
    });
    assert.deepEqual(r.turns, [
      { role: 'user', content: 'Hi there' },
      { role: 'assistant', content: 'Hello!' },
      { role: 'user', content: 'Tell a story' },
      { role: 'assistant', content: 'Once upon', stopped: true, footer: INCOMPLETE_FOOTER },
    ]);
    assert.equal(r.omitted, 0);
    assert.equal(r.title, 'Hi there');
  });

  it('null (no such session) is an empty conversation; a limited read says how many are left out', () => {
    assert.deepEqual(restoredTurns(null), { turns: [], omitted: 0, title: '' });
    const r = restoredTurns({ session: session(250), messages: [{ role: 'user', content: 'q', created: 1, complete: true }] });
    assert.equal(r.omitted, 249);
    assert.equal(omittedNotice(r.omitted, 'vscode:x'), '249 earlier messages not shown (all of them: exlsp sessions show vscode:x).');
    assert.match(omittedNotice(1, 'a') ?? '', /^1 earlier message not/);
    assert.equal(omittedNotice(0, 'a'), undefined);
  });
});

describe('the session list', () => {
  const now = Date.UTC(2025, 0, 20, 12, 0, 0);
  const s = now / 1000;

  it('relative times', () => {
    assert.equal(relativeTime(s - 5, now), 'just now');
    assert.equal(relativeTime(s - 300, now), '5 min ago');
    assert.equal(relativeTime(s - 3 * 3600, now), '3 h ago');
    assert.equal(relativeTime(s - 86400, now), '1 day ago');
    assert.equal(relativeTime(s - 3 * 86400, now), '3 days ago');
    assert.equal(relativeTime(s - 30 * 86400, now), '2024-12-21');
    assert.equal(relativeTime(s + 100, now), 'just now'); // a clock a little ahead
  });

  it("picks: this workspace's sessions first, the current one marked, others with their id", () => {
    const ws = 'vscode:0123456789abcdef';
    const list: SessionInfo[] = [
      { id: 'rebase', title: 'What does git rebase -i do?', created: s - 60, updated: s - 60, messageCount: 4 },
      { id: `${ws}:kx1`, title: '', created: s - 600, updated: s - 600, messageCount: 1 },
      { id: 'vscode:0123456789abcdefX', title: 'other workspace', created: s - 700, updated: s - 700, messageCount: 2 },
      { id: ws, title: 'Explain this', created: s - 7200, updated: s - 7200, messageCount: 2 },
    ];
    const picks = sessionPicks(list, ws, ws, now);
    assert.deepEqual(picks.map((p) => p.id), [`${ws}:kx1`, ws, 'rebase', 'vscode:0123456789abcdefX']);
    assert.deepEqual(picks[0], { label: '(no title)', description: '1 message · 10 min ago', detail: '', id: `${ws}:kx1` });
    assert.deepEqual(picks[1], { label: '$(comment-discussion) Explain this', description: '2 messages · 2 h ago · current', detail: '', id: ws });
    assert.equal(picks[2].detail, 'rebase');
  });
});

function pair(): { client: ProtocolConnection; server: ProtocolConnection } {
  const a = new PassThrough();
  const b = new PassThrough();
  const client = createProtocolConnection(new StreamMessageReader(a), new StreamMessageWriter(b));
  const server = createProtocolConnection(new StreamMessageReader(b), new StreamMessageWriter(a));
  client.listen();
  server.listen();
  return { client, server };
}

describe('session requests over JSON-RPC', () => {
  it('send one params object with the documented names, and read the results', async () => {
    const { client, server } = pair();
    const seen: [string, unknown][] = [];
    const info: SessionInfo = { id: 'x', title: 't', created: 1, updated: 2, messageCount: 2 };
    server.onRequest('exlsp/chatSessions', (p: unknown) => (seen.push(['list', p]), { sessions: [info] }));
    server.onRequest('exlsp/chatSession', (p: { sessionId: string }) => {
      seen.push(['get', p]);
      return p.sessionId === 'x' ? { session: info, messages: [{ role: 'user', content: 'q', created: 1, complete: true }] } : null;
    });
    server.onRequest('exlsp/chatSessionDelete', (p: { sessionId: string }) => (seen.push(['delete', p]), { deleted: p.sessionId === 'x' }));
    assert.deepEqual(await listSessions(client, 7), [info]);
    assert.equal((await getSession(client, 'x', 200))?.messages.length, 1);
    assert.equal(await getSession(client, 'nope'), null);
    assert.equal(await deleteSession(client, 'x'), true);
    assert.equal(await deleteSession(client, 'nope'), false);
    assert.deepEqual(seen, [
      ['list', { limit: 7 }],
      ['get', { sessionId: 'x', limit: 200 }],
      ['get', { sessionId: 'nope' }],
      ['delete', { sessionId: 'x' }],
      ['delete', { sessionId: 'nope' }],
    ]);
    client.dispose();
    server.dispose();
  });

  it('an exlsp without the methods answers MethodNotFound, which reads as "no sessions"', async () => {
    const { client, server } = pair();
    await assert.rejects(getSession(client, 'x'), (e: unknown) => sessionsUnavailable(e));
    client.dispose();
    server.dispose();
  });
});
