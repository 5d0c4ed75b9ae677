// Chat sessions (docs/chat-sessions.md): the server keeps each conversation on disk, so the panel
// sends a session id with every turn and gets the conversation back after a restart. No `vscode`
// import here.
//
// Ids: one per workspace, `vscode:<hash of the workspace uri>`, so reopening the folder continues
// its chat; "New chat" makes `vscode:<hash>:<time>` (the old session stays on the server, listed
// by "Open Previous Chat…" and `exlsp sessions`). The panel remembers the current id in the
// workspace's state. A server without sessions (an older exlsp, or one that keeps none) is
// detected from its answer, and the panel then chats statelessly, as before.

import { createHash, randomBytes } from 'node:crypto';

import type { Turn } from './chat';

/** The server's rule (plugins/chat_store.py): 1-128 characters, no leading punctuation but `_`. */
export const SESSION_ID_RE = /^[A-Za-z0-9_][A-Za-z0-9_.:@+/=-]{0,127}$/;

/** Messages restored into the panel at most (`exlsp sessions show` has them all). */
export const RESTORE_LIMIT = 200;

export interface SessionInfo {
  id: string;
  title: string;
  /** Unix seconds. */
  created: number;
  updated: number;
  messageCount: number;
}

export interface StoredMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
  created: number;
  /** false: an answer cut short (stopped, superseded, failed, the server gone). */
  complete: boolean;
}

/** The `exlsp/chatSession` result (null: no such session). */
export interface SessionResult {
  session: SessionInfo;
  messages: StoredMessage[];
}

export function isSessionId(id: unknown): id is string {
  return typeof id === 'string' && SESSION_ID_RE.test(id);
}

/** The workspace's own session: the same id every time the workspace is opened. */
export function workspaceSessionId(workspaceUri: string | undefined): string {
  if (!workspaceUri) return 'vscode:no-folder';
  return `vscode:${createHash('sha256').update(workspaceUri).digest('hex').slice(0, 16)}`;
}

/** A fresh session for "New chat", named after the workspace's (its prefix groups them). */
export function newSessionId(workspaceId: string, now = Date.now(), salt = randomBytes(3).toString('hex')): string {
  const id = `${workspaceId}:${now.toString(36)}${salt}`;
  if (!isSessionId(id)) throw new Error(`not a valid session id: ${id}`);
  return id;
}

/**
 * The server has no sessions for us: an exlsp without the methods (MethodNotFound) or one that
 * keeps none (InvalidParams "... keeps no chat sessions"). Other InvalidParams about a session
 * (e.g. "the request adds no message to session ...") are errors of that turn, not this.
 */
export function sessionsUnavailable(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | undefined;
  if (e?.code === -32601) return true; // MethodNotFound
  if (e?.code !== -32602 || typeof e.message !== 'string') return false;
  return /\bno (?:chat )?sessions\b|\bsessions? (?:are |is )?(?:not available|unavailable|disabled)\b/i.test(e.message);
}

/** A restored turn: what the panel shows, with how an answer cut short ended. */
export interface RestoredTurn extends Turn {
  footer?: string;
}

export const INCOMPLETE_FOOTER = 'Incomplete: this answer was cut short.';

export interface Restored {
  turns: RestoredTurn[];
  /** Messages of the session not restored (older than the newest RESTORE_LIMIT). */
  omitted: number;
  title: string;
}

/**
 * The panel's turns for a stored session. System messages (sent by other clients) are context,
 * not turns, and are not shown; an answer stored with `complete: false` shows as stopped.
 */
export function restoredTurns(result: SessionResult | null | undefined): Restored {
  if (!result) return { turns: [], omitted: 0, title: '' };
  const turns: RestoredTurn[] = [];
  for (const m of result.messages ?? []) {
    if (m.role === 'user') turns.push({ role: 'user', content: m.content });
    else if (m.role === 'assistant') {
      turns.push(m.complete === false ? { role: 'assistant', content: m.content, stopped: true, footer: INCOMPLETE_FOOTER } : { role: 'assistant', content: m.content });
    }
  }
  const omitted = Math.max(0, (result.session?.messageCount ?? 0) - (result.messages?.length ?? 0));
  return { turns, omitted, title: result.session?.title ?? '' };
}

export function omittedNotice(omitted: number, sessionId: string): string | undefined {
  if (omitted <= 0) return undefined;
  return `${omitted} earlier message${omitted === 1 ? '' : 's'} not shown (all of them: exlsp sessions show ${sessionId}).`;
}

/** "just now", "5 min ago", "3 h ago", "2 days ago", else the date. */
export function relativeTime(unixSeconds: number, nowMs = Date.now()): string {
  const s = Math.max(0, Math.round(nowMs / 1000 - unixSeconds));
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  if (s < 86400 * 14) return `${Math.floor(s / 86400)} day${s < 86400 * 2 ? '' : 's'} ago`;
  return new Date(unixSeconds * 1000).toISOString().slice(0, 10);
}

export interface SessionPick {
  label: string;
  description: string;
  detail: string;
  id: string;
}

/**
 * Quick-pick items for "Open Previous Chat…": this workspace's sessions first (by their id
 * prefix), then the others (the CLI's `exlsp chat --session`, other workspaces), each group most
 * recently updated first as the server lists them.
 */
export function sessionPicks(sessions: readonly SessionInfo[], currentId: string, workspaceId: string, nowMs = Date.now()): SessionPick[] {
  const ours = (s: SessionInfo) => s.id === workspaceId || s.id.startsWith(workspaceId + ':');
  const ordered = [...sessions.filter(ours), ...sessions.filter((s) => !ours(s))];
  return ordered.map((s) => ({
    label: (s.id === currentId ? '$(comment-discussion) ' : '') + (s.title || '(no title)'),
    description: `${s.messageCount} message${s.messageCount === 1 ? '' : 's'} · ${relativeTime(s.updated, nowMs)}${s.id === currentId ? ' · current' : ''}`,
    detail: ours(s) ? '' : s.id,
    id: s.id,
  }));
}
