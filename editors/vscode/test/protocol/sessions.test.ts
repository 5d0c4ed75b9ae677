// Chat sessions against the REAL `exlsp serve`, through the code the chat panel uses: a
// conversation sent turn by turn with a session id survives the server process — a second
// process with the same XDG_STATE_HOME gives it back (`exlsp/chatSession`), an answer stopped
// midway marked incomplete, and the panel's restore logic turns it into the same turns.
// Skipped like server.test.ts when no exlsp executable is found.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';

import { CancellationTokenSource, ResponseError } from 'vscode-languageserver-protocol/node';

import { assembleChat, Turn } from '../../src/lib/chat';
import { CHAT_METHOD, deleteSession, getSession, listSessions, newWorkDoneToken, runChat, waitUntilReady } from '../../src/lib/protocol';
import { INCOMPLETE_FOOTER, restoredTurns, sessionsUnavailable, workspaceSessionId } from '../../src/lib/sessions';
import { eventually, Harness, serverExecutable, startServer, withTimeout } from './harness';

const exe = serverExecutable();
const required = process.env.EXLSP_REQUIRE_SERVER === '1';
if (!exe && required) throw new Error('EXLSP_REQUIRE_SERVER=1 but no exlsp executable (set EXLSP_SERVER or create ../../.venv)');
const skip = exe ? false : 'no exlsp executable: set EXLSP_SERVER or create the repository .venv';

describe('chat sessions with the real exlsp serve', { skip, timeout: 180_000 }, () => {
  const stateHome = mkdtempSync(path.join(tmpdir(), 'exlsp-vscode-state-'));
  const id = workspaceSessionId('file:///tmp/exlsp-vscode-sessions-test');
  const servers: Harness[] = [];
  after(async () => {
    for (const h of servers) await h.close();
    rmSync(stateHome, { recursive: true, force: true });
  });
  const start = async () => {
    const h = await withTimeout(startServer(exe as string, { stateHome }), 60_000, 'server start');
    servers.push(h);
    return h;
  };
  /** One panel turn: only the new message and the session id travel. */
  const turn = (h: Harness, input: string, maxTokens: number, cts?: CancellationTokenSource) => {
    const { params } = assembleChat({ history: [], input, sessionId: id, workDoneToken: newWorkDoneToken(), maxTokens });
    return withTimeout(runChat(h.conn, params, cts ? { token: cts.token, onDelta: () => cts.cancel() } : {}), 60_000, `chat "${input}"`);
  };

  const expected: Turn[] = [];
  let firstPrompt = 0;

  it('a conversation sent turn by turn: the server adds the stored history to each', async () => {
    const h = await start();
    await waitUntilReady(h.conn, 60_000, 100);
    assert.equal(await getSession(h.conn, id), null, 'a fresh state directory has no session');
    const one = await turn(h, 'My name is Ada. Say hello to me.', 12);
    assert.equal(one.result?.sessionId, id, 'the server echoes the session: it keeps it');
    firstPrompt = one.result?.promptTokens ?? 0;
    const two = await turn(h, 'What is my name?', 12);
    assert.equal(two.result?.sessionId, id);
    // The model saw the first exchange too: a longer prompt than the first turn's.
    assert.ok((two.result?.promptTokens ?? 0) > firstPrompt + 10, `${two.result?.promptTokens} vs ${firstPrompt}`);
    expected.push(
      { role: 'user', content: 'My name is Ada. Say hello to me.' },
      { role: 'assistant', content: one.text },
      { role: 'user', content: 'What is my name?' },
      { role: 'assistant', content: two.text },
    );
  });

  it('an answer stopped midway is kept, marked incomplete', async () => {
    const h = servers[0];
    const out = await turn(h, 'Tell a very long story about a robot, in many chapters.', 512, new CancellationTokenSource());
    assert.equal(out.cancelled, true);
    assert.ok(out.streamedText.length > 0);
    // Stored when the cancelled generation ends (the cancel reply may come first).
    const stored = await eventually(async () => {
      const got = await getSession(h.conn, id);
      return got && got.messages.length === 6 ? got : undefined;
    }, 15_000, 'the stopped answer stored');
    const last = stored.messages[5];
    assert.equal(last.complete, false);
    assert.ok(last.content.startsWith(out.streamedText), `${JSON.stringify(last.content)} vs ${JSON.stringify(out.streamedText)}`);
    expected.push({ role: 'user', content: 'Tell a very long story about a robot, in many chapters.' });
  });

  it('refusals about one turn are not read as "no sessions"', async () => {
    const h = servers[0];
    const refused = async (params: unknown) => {
      const err = await h.conn.sendRequest(CHAT_METHOD, params).then(
        () => assert.fail('accepted'),
        (e: ResponseError<unknown>) => e,
      );
      assert.equal(err.code, -32602, err.message);
      assert.equal(sessionsUnavailable(err), false, err.message);
    };
    await refused({ messages: [{ role: 'user', content: 'x' }], sessionId: '-not valid' });
    // The whole stored conversation again, ending with an answer: it adds nothing.
    const all = (await getSession(h.conn, id))?.messages.map((m) => ({ role: m.role, content: m.content }));
    await refused({ messages: all, sessionId: id });
  });

  it('a new server process with the same state directory gives the conversation back', async () => {
    const code = await servers[0].close();
    assert.equal(code, 0);
    const h = await start();
    // No need to wait for the model: the sessions are there from the start.
    const got = await getSession(h.conn, id);
    assert.ok(got, 'the session after the restart');
    assert.equal(got.session.messageCount, 6);
    assert.equal(got.session.title, 'My name is Ada. Say hello to me.');
    assert.deepEqual(got.messages.map((m) => m.complete), [true, true, true, true, true, false]);
    const restored = restoredTurns(got);
    assert.deepEqual(restored.turns.slice(0, 5), expected);
    assert.equal(restored.turns[5].stopped, true);
    assert.equal(restored.turns[5].footer, INCOMPLETE_FOOTER);
    assert.equal(restored.omitted, 0);
    const limited = restoredTurns(await getSession(h.conn, id, 2));
    assert.deepEqual([limited.turns.length, limited.omitted], [2, 4]);
    assert.ok((await listSessions(h.conn)).some((s) => s.id === id && s.messageCount === 6));
  });

  it('the conversation goes on in the new process, then can be deleted', async () => {
    const h = servers[1];
    await waitUntilReady(h.conn, 60_000, 100);
    const three = await turn(h, 'Thanks!', 4);
    assert.equal(three.result?.sessionId, id);
    assert.ok((three.result?.promptTokens ?? 0) > firstPrompt + 20, 'the whole history went to the model');
    assert.equal((await getSession(h.conn, id))?.messages.length, 8);
    assert.equal(await deleteSession(h.conn, id), true);
    assert.equal(await getSession(h.conn, id), null);
    assert.equal(await deleteSession(h.conn, id), false);
    assert.doesNotMatch(h.stderr(), /Traceback/);
  });
});
