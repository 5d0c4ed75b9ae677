// The chat panel: a webview view that sends `exlsp/chat`, streams the deltas from `$/progress`,
// and offers "Insert at cursor" / "Apply to file" on the answer's code blocks.

import * as path from 'node:path';
import * as vscode from 'vscode';

import { applyCodeBlock, insertionText } from './lib/apply';
import { assembleChat, chatFooter, EditorContext, isEmptyRange, Range, Turn } from './lib/chat';
import { extractCodeBlocks, renderMarkdown, renderPlain } from './lib/markdown';
import { Connection, newWorkDoneToken, runChat } from './lib/protocol';
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
  private lastEditor?: vscode.TextEditor;
  private renderTimer?: NodeJS.Timeout;
  private pendingSend?: string;
  private disposables: vscode.Disposable[] = [];
  private viewDisposables: vscode.Disposable[] = [];

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly host: ChatHost,
    readonly proposals: ProposalProvider,
  ) {
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

  clear(): void {
    this.stop();
    this.turns = [];
    this.postState();
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
    this.post({ type: 'state', turns: this.turns.map((t) => this.view_(t)), busy: !!this.running });
  }

  private postTurn(index: number): void {
    this.post({ type: 'turn', index, turn: this.view_(this.turns[index]) });
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
    const conn = this.host.connection();
    if (!conn) {
      void vscode.window.showErrorMessage(`exlsp: cannot chat: ${this.host.notRunningReason()}`);
      return;
    }
    const assembled = assembleChat({
      history: this.turns,
      input,
      editor: this.editorContext(),
      workDoneToken: newWorkDoneToken(),
    });
    this.turns.push(assembled.turn, { role: 'assistant', content: '', streaming: true });
    const index = this.turns.length - 1;
    const answer = this.turns[index];
    const cts = new vscode.CancellationTokenSource();
    this.running = { cts, index };
    this.postState();
    this.host.busy(+1);
    try {
      const outcome = await runChat(conn, assembled.params, {
        token: cts.token,
        onDelta: (_delta, text) => {
          answer.content = text;
          this.scheduleRender(index);
        },
      });
      answer.content = outcome.text;
      answer.stopped = outcome.cancelled;
      answer.footer = chatFooter(outcome);
    } catch (err) {
      answer.error = err instanceof Error ? err.message : String(err);
      answer.stopped = true;
    } finally {
      answer.streaming = false;
      clearTimeout(this.renderTimer);
      this.renderTimer = undefined;
      this.running = undefined;
      cts.dispose();
      this.host.busy(-1);
      this.host.refreshStatus();
      this.postTurn(index);
      this.post({ type: 'busy', busy: false });
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
