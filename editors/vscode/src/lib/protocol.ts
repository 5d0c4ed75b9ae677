// The extension's requests to exlsp, written against the part of the connection API that
// vscode-languageclient's LanguageClient and vscode-jsonrpc's MessageConnection share — so the
// protocol tests drive the real server through exactly this code. No `vscode` import here.

import { CancellationToken, Disposable, LSPErrorCodes, ProgressType, WorkDoneProgress } from 'vscode-languageserver-protocol';

import type { ChatParams } from './chat';
import { DeltaAccumulator, ProgressValue, StreamState } from './progress';
import type { SessionInfo, SessionResult } from './sessions';
import type { ExlspStatus } from './status';

export const CHAT_METHOD = 'exlsp/chat';
export const CHAT_SESSIONS_METHOD = 'exlsp/chatSessions';
export const CHAT_SESSION_METHOD = 'exlsp/chatSession';
export const CHAT_SESSION_DELETE_METHOD = 'exlsp/chatSessionDelete';
export const STATUS_METHOD = 'exlsp/status';
export const EXECUTE_COMMAND_METHOD = 'workspace/executeCommand';
export const ACCEPT_COMMAND = 'exlsp.accept';
export const RELOAD_PLUGINS_COMMAND = 'exlsp.reloadPlugins';
export const CLEAR_CACHE_COMMAND = 'exlsp.clearCache';

/** What both LanguageClient and MessageConnection offer. */
export interface Connection {
  sendRequest<R>(method: string, param: unknown, token?: CancellationToken): Promise<R>;
  onProgress<P>(type: ProgressType<P>, token: string | number, handler: (params: P) => void): Disposable;
}

export interface ChatResult {
  text: string;
  stopReason: string;
  promptTokens: number;
  reusedTokens: number;
  generatedTokens: number;
  /** Echoed when the request named a session (a server without sessions leaves it out). */
  sessionId?: string;
}

export interface ChatOutcome {
  /** The full answer: the result's text, or what streamed before a stop. */
  text: string;
  result?: ChatResult;
  cancelled: boolean;
  /** Deltas seen, and whether their concatenation equals the final text. */
  deltas: number;
  streamedText: string;
  /** How the progress stream ended as far as the client saw it ("done"/"cancelled" from `end`). */
  stream: StreamState;
}

/**
 * Send a request with one params object. The token is passed only when there is one: vscode-jsonrpc
 * counts an explicit `undefined` as a second parameter and sends the params by position (an
 * array), which the server cannot read.
 */
export function request<R>(conn: Pick<Connection, 'sendRequest'>, method: string, param: unknown, token?: CancellationToken): Promise<R> {
  return token ? conn.sendRequest<R>(method, param, token) : conn.sendRequest<R>(method, param);
}

let tokenCounter = 0;
/** A fresh work-done token per chat request. */
export function newWorkDoneToken(prefix = 'exlsp-chat'): string {
  tokenCounter += 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${tokenCounter}`;
}

export function isCancellation(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (code === LSPErrorCodes.RequestCancelled || code === LSPErrorCodes.ServerCancelled) return true;
  // vscode.CancellationError (thrown by some client paths) carries the name "Canceled".
  return err instanceof Error && (err.name === 'Canceled' || err.message === 'Canceled');
}

export interface ChatCallbacks {
  /** Called for every delta with the delta and the text so far. */
  onDelta?: (delta: string, textSoFar: string) => void;
  /** Stop button: cancelling sends `$/cancelRequest`. */
  token?: CancellationToken;
}

/**
 * Send `exlsp/chat` with a fresh work-done token (unless the params name one), stream the deltas
 * from `$/progress`, and return the answer. A cancellation resolves (cancelled: true, with the
 * text streamed so far); other errors reject.
 */
export async function runChat(conn: Connection, params: ChatParams, cb: ChatCallbacks = {}): Promise<ChatOutcome> {
  const token = params.workDoneToken ?? newWorkDoneToken();
  const acc = new DeltaAccumulator();
  const sub = conn.onProgress(WorkDoneProgress.type, token, (value) => {
    const delta = acc.apply(value as ProgressValue);
    if (delta) cb.onDelta?.(delta, acc.text);
  });
  try {
    const result = await request<ChatResult>(conn, CHAT_METHOD, { ...params, workDoneToken: token }, cb.token);
    return { text: result?.text ?? acc.text, result, cancelled: false, deltas: acc.deltas, streamedText: acc.text, stream: acc.state };
  } catch (err) {
    if (isCancellation(err) || cb.token?.isCancellationRequested) {
      return { text: acc.text, cancelled: true, deltas: acc.deltas, streamedText: acc.text, stream: acc.state };
    }
    throw err;
  } finally {
    sub.dispose();
  }
}

/** `exlsp/chatSessions`: the most recently updated first. */
export async function listSessions(conn: Pick<Connection, 'sendRequest'>, limit = 50): Promise<SessionInfo[]> {
  const result = await request<{ sessions?: SessionInfo[] } | null>(conn, CHAT_SESSIONS_METHOD, { limit });
  return result?.sessions ?? [];
}

/** `exlsp/chatSession`: the session and its newest `limit` messages, or null if there is none. */
export function getSession(conn: Pick<Connection, 'sendRequest'>, sessionId: string, limit?: number): Promise<SessionResult | null> {
  return request<SessionResult | null>(conn, CHAT_SESSION_METHOD, limit === undefined ? { sessionId } : { sessionId, limit });
}

/** `exlsp/chatSessionDelete`: true if there was such a session. */
export async function deleteSession(conn: Pick<Connection, 'sendRequest'>, sessionId: string): Promise<boolean> {
  const result = await request<{ deleted?: boolean } | null>(conn, CHAT_SESSION_DELETE_METHOD, { sessionId });
  return result?.deleted === true;
}

export interface AcceptArgs {
  uri: string;
  kind: 'completion' | 'word' | 'line' | string;
  chars: number;
}

/** Tell the server a suggestion (or part of one) was accepted; counted locally only. */
export function sendAccept(conn: Pick<Connection, 'sendRequest'>, args: AcceptArgs): Promise<unknown> {
  return conn.sendRequest(EXECUTE_COMMAND_METHOD, { command: ACCEPT_COMMAND, arguments: [args] });
}

export function executeServerCommand(conn: Pick<Connection, 'sendRequest'>, command: string, args: unknown[] = []): Promise<unknown> {
  return conn.sendRequest(EXECUTE_COMMAND_METHOD, { command, arguments: args });
}

export function fetchStatus(conn: Pick<Connection, 'sendRequest'>, token?: CancellationToken): Promise<ExlspStatus> {
  return request<ExlspStatus>(conn, STATUS_METHOD, {}, token);
}

/** Poll `exlsp/status` until `ready` (the model loads in the background), or fail after `timeoutMs`. */
export async function waitUntilReady(conn: Pick<Connection, 'sendRequest'>, timeoutMs = 60000, intervalMs = 100): Promise<ExlspStatus> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await fetchStatus(conn);
    if (status.ready) return status;
    if (status.loadError) throw new Error(`exlsp: the model failed to load: ${status.loadError}`);
    if (Date.now() > deadline) throw new Error('exlsp: the model did not load in time');
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Characters a partial accept inserted, from the document changes it caused. */
export function insertedChars(changes: readonly { text: string; rangeLength?: number }[]): number {
  let n = 0;
  for (const c of changes) n += c.text.length;
  return n;
}
