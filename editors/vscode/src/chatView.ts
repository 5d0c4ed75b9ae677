// The chat panel: a webview view that sends `exlsp/chat`, streams the deltas from `$/progress`,
// and offers "Insert at cursor" / "Apply to file" on the answer's code blocks. The conversation
// lives in a server-side chat session (./lib/sessions.ts), so it survives restarts: the panel
// sends only each new turn, and reads the conversation back when it opens.

import * as path from 'node:path';
import * as vscode from 'vscode';

import { applyCodeBlock, insertionText } from './lib/apply';
import { assembleChat, chatFooter, EditorContext, isEmptyRange, Range, Turn } from './lib/chat';
import { extractCodeBlocks, renderMarkdown, renderPlain } from './lib/markdown';
import { ChatOutcome, Connection, deleteSession, getSession, listSessions, newWorkDoneToken, runChat } from './lib/protocol';
import {
  isSessionId,
  newSessionId,
  omittedNotice,
  Restored,
  RESTORE_LIMIT,
  restoredTurns,
  SessionInfo,
  sessionPicks,
  sessionsUnavailable,
  workspaceSessionId,
} from './lib/sessions';
import { chatHtml, newNonce } from './lib/webviewHtml';

export interface ChatHost {
  /** The running client, or undefined (with the reason shown to the user). */
  connection(): Connection | undefined;
  notRunningReason(): string;
  busy(delta: number): void;
  refreshStatus(): void;
  log(message: string): void;
}

interface PanelTurn extends Turn {
  streaming?: boolean;
  error?: string;
  footer?: string;
}

const PROPOSAL_SCHEME = 'exlsp-proposal';
/** workspaceState key: the session the panel continues in this workspace. */
const SESSION_KEY = 'exlsp.chat.sessionId';

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The server's title rule: the first line of the first user message, 80 characters at most. */
function titleOf(content: string): string {
  return (content.split('\n')[0] ?? '').slice(0, 80);
}

interface Proposal {
  target: vscode.Uri;
  version: number;
  text: string;
}

/** Virtual documents holding proposed file contents, shown on the right of a diff. */
export class ProposalProvider implements vscode.TextDocumentContentProvider {
  private proposals = new Map<string, Proposal>();
  private counter = 0;
  private changed = new vscode.EventEmitter<vscode.Uri>();
  readonly onDidChange = this.changed.event;

  provideTextDocumentContent(uri: vscode.Uri): string {
    return this.proposals.get(uri.query)?.text ?? '';
  }

  add(target: vscode.TextDocument, text: string): vscode.Uri {
    const key = String(++this.counter);
    this.proposals.set(key, { target: target.uri, version: target.version, text });
    const name = path.posix.basename(target.uri.path) || 'untitled';
    return vscode.Uri.from({ scheme: PROPOSAL_SCHEME, path: `/${name}`, query: key });
  }

  get(uri: vscode.Uri): Proposal | undefined {
    return uri.scheme === PROPOSAL_SCHEME ? this.proposals.get(uri.query) : undefined;
  }

  async apply(uri: vscode.Uri): Promise<boolean> {
    const proposal = this.get(uri);
    if (!proposal) return false;
    const doc = await vscode.workspace.openTextDocument(proposal.target);
    if (doc.version !== proposal.version) {
      void vscode.window.showWarningMessage(
        'exlsp: the file changed since the change was proposed; use "Apply to file" again.',
      );
      return false;
    }
    const edit = new vscode.WorkspaceEdit();
    edit.replace(doc.uri, new vscode.Range(doc.positionAt(0), doc.positionAt(doc.getText().length)), proposal.text);
    const ok = await vscode.workspace.applyEdit(edit);
    if (ok) await this.discard(uri);
    return ok;
  }

  async discard(uri: vscode.Uri): Promise<void> {
    this.proposals.delete(uri.query);
    const tabs: vscode.Tab[] = [];
    for (const group of vscode.window.tabGroups.all) {
      for (const tab of group.tabs) {
        if (tab.input instanceof vscode.TabInputTextDiff && tab.input.modified.toString() === uri.toString()) tabs.push(tab);
      }
    }
    if (tabs.length) await vscode.window.tabGroups.close(tabs);
  }

  dispose(): void {
    this.changed.dispose();
    this.proposals.clear();
  }
}

function toRange(sel: vscode.Selection | vscode.Range): Range {
  return {
    start: { line: sel.start.line, character: sel.start.character },
    end: { line: sel.end.line, character: sel.end.character },
  };
}

function isChatTarget(editor: vscode.TextEditor | undefined): editor is vscode.TextEditor {
  return !!editor && ['file', 'untitled'].includes(editor.document.uri.scheme);
}

export class ChatViewProvider implements vscode.WebviewViewProvider, vscode.Disposable {
  static readonly viewType = 'exlsp.chatView';

  private view?: vscode.WebviewView;
  private turns: PanelTurn[] = [];
  private running?: { cts: vscode.CancellationTokenSource; index: number };
  /** This workspace's own session id; "New chat" ids start with it. */
  private readonly workspaceId: string;
  private sessionId: string;
  /** The session whose stored conversation `turns` shows (undefined: not read yet). */
  private loaded?: string;
  private restoring?: Promise<void>;
  /** The connection whose server keeps no sessions: the panel chats statelessly on it. */
  private stateless?: Connection;
  private title = '';
  private notice?: string;
  private lastEditor?: vscode.TextEditor;
  private renderTimer?: NodeJS.Timeout;
  private pendingSend?: string;
  private disposables: vscode.Disposable[] = [];
  private viewDisposables: vscode.Disposable[] = [];

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly host: ChatHost,
    readonly proposals: ProposalProvider,
    /** The workspace's state (context.workspaceState): remembers the current session. */
    private readonly state?: vscode.Memento,
  ) {
    const workspace = vscode.workspace.workspaceFile ?? vscode.workspace.workspaceFolders?.[0]?.uri;
    this.workspaceId = workspaceSessionId(workspace?.toString());
    const saved = state?.get<string>(SESSION_KEY);
    this.sessionId = isSessionId(saved) ? saved : this.workspaceId;
    if (isChatTarget(vscode.window.activeTextEditor)) this.lastEditor = vscode.window.activeTextEditor;
    this.disposables.push(
      vscode.window.onDidChangeActiveTextEditor((e) => {
        if (isChatTarget(e)) this.lastEditor = e;
      }),
    );
  }

  resolveWebviewView(view: vscode.WebviewView): void {
    this.view = view;
    const media = vscode.Uri.joinPath(this.extensionUri, 'media');
    view.webview.options = { enableScripts: true, enableForms: false, localResourceRoots: [media] };
    view.webview.html = chatHtml({
      cspSource: view.webview.cspSource,
      nonce: newNonce(),
      scriptUri: view.webview.asWebviewUri(vscode.Uri.joinPath(media, 'chat.js')).toString(),
      styleUri: view.webview.asWebviewUri(vscode.Uri.joinPath(media, 'chat.css')).toString(),
    });
    // A hidden view's webview is rebuilt when shown again: its listeners go with the old one.
    for (const d of this.viewDisposables.splice(0)) d.dispose();
    this.viewDisposables.push(
      view.webview.onDidReceiveMessage((msg) => this.onMessage(msg)),
      view.onDidDispose(() => {
        if (this.view === view) this.view = undefined;
      }),
    );
  }

  /** Open the panel; with `text`, send it (the editor's selection commands). */
  async open(text?: string): Promise<void> {
    if (text !== undefined) this.pendingSend = text;
    await vscode.commands.executeCommand(`${ChatViewProvider.viewType}.focus`);
    if (this.view && this.pendingSend !== undefined) {
      const t = this.pendingSend;
      this.pendingSend = undefined;
      await this.send(t);
    } else {
      this.post({ type: 'focus' });
    }
  }

  /** "New chat": a new session; the old one stays on the server ("Open Previous Chat…"). */
  clear(): void {
    this.stop();
    this.switchTo(newSessionId(this.workspaceId));
    this.loaded = this.sessionId; // a new id: nothing stored under it yet
    this.postState();
  }

  /** The session the panel continues (for tests and the log). */
  currentSession(): string {
    return this.sessionId;
  }

  private switchTo(id: string): void {
    this.sessionId = id;
    void this.state?.update(SESSION_KEY, id);
    this.turns = [];
    this.loaded = undefined;
    this.title = '';
    this.notice = undefined;
  }

  private goStateless(conn: Connection, why: string): void {
    if (this.stateless === conn) return;
    this.stateless = conn;
    this.host.log(`chat: this server keeps no chat sessions (${why}); chatting without them`);
  }

  /**
   * Show the current session's stored conversation: when the panel opens, after the server
   * started, before the first turn is sent. Once per session; nothing without a server, with a
   * server without sessions, or while an answer streams (it runs again when that ends).
   */
  restore(): Promise<void> {
    // One read at a time; one for a session switched away from is followed by the current one's.
    const pending = this.restoring;
    return pending ? pending.then(() => this.restoreNow()) : this.restoreNow();
  }

  private restoreNow(): Promise<void> {
    if (this.restoring) return this.restoring;
    const conn = this.host.connection();
    if (!conn || this.stateless === conn || this.loaded === this.sessionId || this.running) return Promise.resolve();
    const id = this.sessionId;
    this.restoring = this.doRestore(conn, id).finally(() => (this.restoring = undefined));
    return this.restoring;
  }

  private async doRestore(conn: Connection, id: string): Promise<void> {
    let restored: Restored;
    try {
      restored = restoredTurns(await getSession(conn, id, RESTORE_LIMIT));
    } catch (err) {
      if (sessionsUnavailable(err)) this.goStateless(conn, errorMessage(err));
      else this.host.log(`chat: reading session ${id}: ${errorMessage(err)}`);
      return;
    }
    if (this.sessionId !== id || this.running) return; // switched, or a turn started meanwhile
    this.loaded = id;
    // Turns from a stateless chat stay unless the server has a conversation to show instead.
    if (restored.turns.length || !this.turns.length) {
      this.turns = restored.turns;
      this.notice = omittedNotice(restored.omitted, id);
      this.title = restored.title;
    }
    this.postState();
  }

  /** Called when the server (re)started: the panel, if open, shows the stored conversation. */
  onServerStarted(): void {
    if (this.view) void this.restore();
  }

  private connectionOrError(what: string): Connection | undefined {
    const conn = this.host.connection();
    if (!conn) void vscode.window.showErrorMessage(`exlsp: cannot ${what}: ${this.host.notRunningReason()}`);
    return conn;
  }

  /** "Open Previous Chat…": pick a stored session and continue it. */
  async openPrevious(): Promise<void> {
    const conn = this.connectionOrError('list the chats');
    if (!conn) return;
    let sessions: SessionInfo[];
    try {
      sessions = await listSessions(conn, 100);
    } catch (err) {
      if (!sessionsUnavailable(err)) throw err;
      this.goStateless(conn, errorMessage(err));
      void vscode.window.showInformationMessage('exlsp: this server keeps no chat sessions.');
      return;
    }
    if (!sessions.length) {
      void vscode.window.showInformationMessage('exlsp: no saved chats yet.');
      return;
    }
    const picked = await vscode.window.showQuickPick(sessionPicks(sessions, this.sessionId, this.workspaceId), {
      title: 'exlsp: open a previous chat',
      matchOnDescription: true,
      matchOnDetail: true,
    });
    if (!picked) return;
    if (picked.id !== this.sessionId) {
      this.stop();
      this.switchTo(picked.id);
      this.postState();
    }
    await this.restore();
    await this.open();
  }

  /** "Delete Chat": remove the current session from the server, then start a new one. */
  async deleteChat(): Promise<void> {
    const conn = this.connectionOrError('delete the chat');
    if (!conn) return;
    const what = this.title ? `"${this.title}"` : 'this chat';
    const choice = await vscode.window.showWarningMessage(`exlsp: delete ${what} from exlsp's saved chats?`, { modal: true }, 'Delete');
    if (choice !== 'Delete') return;
    this.stop();
    try {
      await deleteSession(conn, this.sessionId);
    } catch (err) {
      if (!sessionsUnavailable(err)) throw err;
      this.goStateless(conn, errorMessage(err));
    }
    this.clear();
  }

  stop(): void {
    this.running?.cts.cancel();
  }

  private post(message: unknown): void {
    void this.view?.webview.postMessage(message);
  }

  private view_(turn: PanelTurn) {
    return {
      role: turn.role,
      html: turn.role === 'user' ? renderPlain(turn.content) : renderMarkdown(turn.content, { actions: !turn.streaming }),
      footer: turn.error ? `Error: ${turn.error}` : turn.footer,
      streaming: turn.streaming,
      error: !!turn.error,
    };
  }

  private postState(): void {
    if (this.view) this.view.description = this.title || undefined;
    this.post({ type: 'state', turns: this.turns.map((t) => this.view_(t)), busy: !!this.running, notice: this.notice });
  }

  private postTurn(index: number): void {
    const turn = this.turns[index];
    if (turn) this.post({ type: 'turn', index, turn: this.view_(turn) });
  }

  private scheduleRender(index: number): void {
    if (this.renderTimer) return;
    this.renderTimer = setTimeout(() => {
      this.renderTimer = undefined;
      this.postTurn(index);
    }, 50);
  }

  private async onMessage(msg: { type?: string; text?: string; turn?: number; block?: number }): Promise<void> {
    try {
      switch (msg.type) {
        case 'ready':
          this.postState();
          await this.restore();
          if (this.pendingSend !== undefined) {
            const t = this.pendingSend;
            this.pendingSend = undefined;
            await this.send(t);
          }
          break;
        case 'send':
          if (typeof msg.text === 'string') await this.send(msg.text);
          break;
        case 'stop':
          this.stop();
          break;
        case 'insert':
        case 'apply':
        case 'copy': {
          const code = this.codeBlock(msg.turn, msg.block);
          if (code === undefined) return;
          if (msg.type === 'copy') await vscode.env.clipboard.writeText(code);
          else if (msg.type === 'insert') await this.insertAtCursor(code);
          else await this.applyToFile(msg.turn as number, code);
          break;
        }
      }
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      this.host.log(`chat: ${message}`);
      void vscode.window.showErrorMessage(`exlsp: ${message}`);
    }
  }

  private codeBlock(turn: number | undefined, block: number | undefined): string | undefined {
    if (typeof turn !== 'number' || typeof block !== 'number') return undefined;
    const t = this.turns[turn];
    if (!t || t.role !== 'assistant') return undefined;
    return extractCodeBlocks(t.content)[block]?.code;
  }

  private editorContext(): EditorContext | undefined {
    const editor = this.lastEditor;
    if (!editor || editor.document.isClosed) return undefined;
    const selection = editor.selection;
    return { uri: editor.document.uri.toString(), selection: selection.isEmpty ? undefined : toRange(selection) };
  }

  private async send(input: string): Promise<void> {
    if (!input.trim()) return;
    if (this.running) {
      void vscode.window.showInformationMessage('exlsp: an answer is still streaming; stop it first.');
      return;
    }
    const conn = this.connectionOrError('chat');
    if (!conn) return;
    await this.restore(); // the stored conversation first: the new turn follows it
    if (this.running) {
      void vscode.window.showInformationMessage('exlsp: an answer is still streaming; stop it first.');
      return;
    }
    const history = this.turns.slice();
    const editor = this.editorContext();
    const sessionId = this.stateless === conn ? undefined : this.sessionId;
    // With a session only the new turn travels; without one, the history the panel keeps.
    const assemble = (sid: string | undefined) => assembleChat({ history, input, editor, workDoneToken: newWorkDoneToken(), sessionId: sid });
    const assembled = assemble(sessionId);
    this.turns.push(assembled.turn, { role: 'assistant', content: '', streaming: true });
    if (!this.title && sessionId !== undefined) this.title = titleOf(assembled.turn.content);
    const index = this.turns.length - 1;
    const answer = this.turns[index];
    const cts = new vscode.CancellationTokenSource();
    this.running = { cts, index };
    this.postState();
    this.host.busy(+1);
    const callbacks = {
      token: cts.token,
      onDelta: (_delta: string, text: string) => {
        answer.content = text;
        if (this.turns[index] === answer) this.scheduleRender(index);
      },
    };
    try {
      let outcome: ChatOutcome;
      try {
        outcome = await runChat(conn, assembled.params, callbacks);
      } catch (err) {
        if (sessionId === undefined || !sessionsUnavailable(err)) throw err;
        this.goStateless(conn, errorMessage(err)); // and ask again, the stateless way
        outcome = await runChat(conn, assemble(undefined).params, callbacks);
      }
      if (sessionId !== undefined && outcome.result && outcome.result.sessionId !== sessionId) {
        // An exlsp from before sessions ignores the field: it answered, but keeps nothing.
        this.goStateless(conn, 'the answer does not name the session');
      }
      answer.content = outcome.text;
      answer.stopped = outcome.cancelled;
      answer.footer = chatFooter(outcome);
    } catch (err) {
      answer.error = errorMessage(err);
      answer.stopped = true;
    } finally {
      answer.streaming = false;
      clearTimeout(this.renderTimer);
      this.renderTimer = undefined;
      this.running = undefined;
      cts.dispose();
      this.host.busy(-1);
      this.host.refreshStatus();
      // "New chat" or another session may have replaced the turns while this one ran.
      if (this.turns[index] === answer) this.postTurn(index);
      this.post({ type: 'busy', busy: false });
      if (this.view && this.loaded !== this.sessionId) void this.restore();
    }
  }

  private async targetEditor(): Promise<vscode.TextEditor | undefined> {
    const editor = this.lastEditor;
    if (!editor || editor.document.isClosed) {
      void vscode.window.showWarningMessage('exlsp: open a file to insert the code into.');
      return undefined;
    }
    // Bring it back to the front (the chat view has the focus); the selection is kept.
    return vscode.window.showTextDocument(editor.document, { viewColumn: editor.viewColumn, preserveFocus: false });
  }

  private async insertAtCursor(code: string): Promise<void> {
    const editor = await this.targetEditor();
    if (!editor) return;
    const text = insertionText(code);
    await editor.edit((b) => {
      for (const sel of editor.selections) b.replace(sel, text);
    });
  }

  private async applyToFile(turnIndex: number, code: string): Promise<void> {
    // The question before the answer says which document and selection it was about.
    const question = this.turns[turnIndex - 1];
    let doc: vscode.TextDocument | undefined;
    let range: vscode.Range | undefined;
    if (question?.uri) {
      doc = await vscode.workspace.openTextDocument(vscode.Uri.parse(question.uri));
      if (question.selection && !isEmptyRange(question.selection)) {
        const s = question.selection;
        range = doc.validateRange(new vscode.Range(s.start.line, s.start.character, s.end.line, s.end.character));
      }
    } else {
      const editor = await this.targetEditor();
      if (!editor) return;
      doc = editor.document;
      if (!editor.selection.isEmpty) range = editor.selection;
    }
    const text = doc.getText();
    const proposed = applyCodeBlock(text, code, range ? { start: doc.offsetAt(range.start), end: doc.offsetAt(range.end) } : undefined);
    if (proposed === text) {
      void vscode.window.showInformationMessage('exlsp: the code block is already what the file has there.');
      return;
    }
    const right = this.proposals.add(doc, proposed);
    const name = path.posix.basename(doc.uri.path) || 'untitled';
    await vscode.commands.executeCommand('vscode.diff', doc.uri, right, `${name} ↔ exlsp proposal`, { preview: true });
    const where = range ? 'the selection' : 'the whole file';
    const choice = await vscode.window.showInformationMessage(
      `exlsp: apply the proposed change to ${where} of ${name}?`,
      'Apply',
      'Discard',
    );
    if (choice === 'Apply') await this.proposals.apply(right);
    else if (choice === 'Discard') await this.proposals.discard(right);
  }

  dispose(): void {
    this.stop();
    clearTimeout(this.renderTimer);
    for (const d of [...this.disposables, ...this.viewDisposables]) d.dispose();
  }
}

export { PROPOSAL_SCHEME };
