// exlsp for VS Code: starts `exlsp serve`, lets vscode-languageclient (>= 10, which registers
// inline completion itself) serve ghost text, adds accept word/line, a status bar item and a chat
// panel. The logic that does not need VS Code lives in ./lib and is unit-tested in Node.

import * as vscode from 'vscode';
import { LanguageClient, LanguageClientOptions, ServerOptions, State } from 'vscode-languageclient/node';

import { ChatViewProvider, PROPOSAL_SCHEME, ProposalProvider } from './chatView';
import { checkExecutable, executableErrorMessage } from './lib/executable';
import {
  CLEAR_CACHE_COMMAND,
  Connection,
  executeServerCommand,
  fetchStatus,
  insertedChars,
  RELOAD_PLUGINS_COMMAND,
  sendAccept,
} from './lib/protocol';
import { needsRestart, serverCommand, toInitializationOptions } from './lib/settings';
import { ClientState, ExlspStatus, formatStatusBar, statusDetails } from './lib/status';

const STATUS_POLL_MS = 5000;
const OPEN_SETTINGS = 'Open settings';

class ExlspExtension implements vscode.Disposable {
  private client?: LanguageClient;
  private state: ClientState = 'stopped';
  private stateDetail?: string;
  private inFlight = 0;
  private status?: ExlspStatus;
  private pollTimer?: NodeJS.Timeout;
  private refreshTimer?: NodeJS.Timeout;
  private polling = false;
  private starting?: Promise<void>;
  private readonly output: vscode.LogOutputChannel;
  private readonly item: vscode.StatusBarItem;
  readonly chat: ChatViewProvider;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(context: vscode.ExtensionContext) {
    this.output = vscode.window.createOutputChannel('exlsp', { log: true });
    this.item = vscode.window.createStatusBarItem('exlsp.status', vscode.StatusBarAlignment.Right, 100);
    this.item.name = 'exlsp';
    this.item.command = 'exlsp.status';
    this.item.show();
    const proposals = new ProposalProvider();
    this.chat = new ChatViewProvider(context.extensionUri, {
      connection: () => this.connection(),
      notRunningReason: () => this.stateDetail ?? `the server is ${this.state}`,
      busy: (d) => this.busy(d),
      refreshStatus: () => this.scheduleRefresh(0),
      log: (m) => this.output.info(m),
    }, proposals, context.workspaceState);
    this.disposables.push(
      this.output,
      this.item,
      proposals,
      this.chat,
      vscode.workspace.registerTextDocumentContentProvider(PROPOSAL_SCHEME, proposals),
      vscode.window.registerWebviewViewProvider(ChatViewProvider.viewType, this.chat, {
        webviewOptions: { retainContextWhenHidden: false },
      }),
      vscode.workspace.onDidChangeConfiguration((e) => this.onConfigurationChanged(e)),
    );
    this.registerCommands();
    this.render();
  }

  private registerCommands(): void {
    const reg = (id: string, fn: (...args: unknown[]) => unknown) =>
      this.disposables.push(vscode.commands.registerCommand(id, fn));
    reg('exlsp.acceptWord', () => this.acceptPart('word'));
    reg('exlsp.acceptLine', () => this.acceptPart('line'));
    reg('exlsp.status', () => this.showStatus());
    reg('exlsp.restart', () => this.restart());
    reg('exlsp.chat.open', () => this.chat.open());
    reg('exlsp.chat.explain', () => this.chat.open('/explain'));
    reg('exlsp.chat.fix', () => this.chat.open('/fix'));
    reg('exlsp.chat.test', () => this.chat.open('/test'));
    reg('exlsp.chat.clear', () => this.chat.clear());
    reg('exlsp.chat.history', () => this.chat.openPrevious().catch((err) => this.showError(err)));
    reg('exlsp.chat.delete', () => this.chat.deleteChat().catch((err) => this.showError(err)));
    reg('exlsp.chat.applyProposal', (uri) => this.chat.proposals.apply(this.proposalUri(uri)));
    reg('exlsp.chat.discardProposal', (uri) => this.chat.proposals.discard(this.proposalUri(uri)));
  }

  private showError(err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    this.output.error(message);
    void vscode.window.showErrorMessage(`exlsp: ${message}`);
  }

  private proposalUri(arg: unknown): vscode.Uri {
    if (arg instanceof vscode.Uri && arg.scheme === PROPOSAL_SCHEME) return arg;
    const active = vscode.window.activeTextEditor?.document.uri;
    if (active?.scheme === PROPOSAL_SCHEME) return active;
    const tab = vscode.window.tabGroups.activeTabGroup.activeTab?.input;
    if (tab instanceof vscode.TabInputTextDiff) return tab.modified;
    return vscode.Uri.from({ scheme: PROPOSAL_SCHEME, path: '/none' });
  }

  // ---- the language client ------------------------------------------------------------------

  connection(): Connection | undefined {
    return this.client?.isRunning() ? this.client : undefined;
  }

  start(): Promise<void> {
    this.starting ??= this.doStart().finally(() => (this.starting = undefined));
    return this.starting;
  }

  private async doStart(): Promise<void> {
    const cfg = vscode.workspace.getConfiguration('exlsp');
    const cmd = serverCommand(cfg.get('serverPath'), cfg.get('serverArgs'));
    const cwd = vscode.workspace.workspaceFolders?.[0]?.uri.scheme === 'file' ? vscode.workspace.workspaceFolders[0].uri.fsPath : undefined;
    this.setState('starting');
    const check = await checkExecutable(cmd.command, { cwd });
    if (!check.ok) {
      const message = executableErrorMessage(check, cmd.command) as string;
      this.output.error(message);
      this.setState(check.reason === 'missing' ? 'missing' : 'failed', message);
      void vscode.window.showErrorMessage(message, OPEN_SETTINGS, 'Show log').then((choice) => {
        if (choice === OPEN_SETTINGS) void vscode.commands.executeCommand('workbench.action.openSettings', 'exlsp.serverPath');
        else if (choice === 'Show log') this.output.show();
      });
      return;
    }
    this.output.info(`starting ${cmd.command} ${cmd.args.join(' ')}${check.version ? ` (${check.version})` : ''}`);
    const serverOptions: ServerOptions = {
      command: cmd.command,
      args: cmd.args,
      // No `transport`: TransportKind.stdio would make the client append `--stdio`, which
      // `exlsp serve` does not take. Without one the client still talks over stdio.
      // detached: vscode-languageclient otherwise kill -9s the process tree 2 s after shutdown.
      // exlsp's process may own the model for other editors attached through lsp.sock (and the
      // shell socket); it exits by itself after `exit` / end of stdin once the last one leaves.
      options: { cwd, detached: true },
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
      // Evaluated at every (re)start, so a restart picks up the current settings.
      initializationOptions: () => toInitializationOptions(vscode.workspace.getConfiguration().get('exlsp')),
      synchronize: { configurationSection: 'exlsp' },
      outputChannel: this.output,
      middleware: {
        provideInlineCompletionItems: async (document, position, context, token, next) => {
          this.busy(+1);
          try {
            return await next(document, position, context, token);
          } finally {
            this.busy(-1);
            this.scheduleRefresh(300);
          }
        },
      },
    };
    const client = new LanguageClient('exlsp', 'exlsp', serverOptions, clientOptions);
    this.client = client;
    client.onDidChangeState((e) => {
      if (this.client !== client) return;
      if (e.newState === State.Running) this.setState('running');
      else if (e.newState === State.Stopped) this.setState('stopped');
      else this.setState('starting');
    });
    try {
      await client.start();
      this.setState('running');
      this.startPolling();
      this.scheduleRefresh(0);
      this.chat.onServerStarted();
    } catch (err) {
      const message = `exlsp: the server failed to start: ${err instanceof Error ? err.message : String(err)}`;
      this.output.error(message);
      this.setState('failed', message);
      void vscode.window.showErrorMessage(message, OPEN_SETTINGS, 'Show log').then((choice) => {
        if (choice === OPEN_SETTINGS) void vscode.commands.executeCommand('workbench.action.openSettings', 'exlsp.');
        else if (choice === 'Show log') this.output.show();
      });
    }
  }

  async stop(): Promise<void> {
    this.stopPolling();
    const client = this.client;
    this.client = undefined;
    this.status = undefined;
    if (client) {
      try {
        await client.stop(5000);
      } catch (err) {
        this.output.warn(`stopping the server: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    this.setState('stopped');
  }

  async restart(): Promise<void> {
    this.chat.stop();
    await this.starting;
    await this.stop();
    await this.start();
  }

  private async onConfigurationChanged(e: vscode.ConfigurationChangeEvent): Promise<void> {
    // The server's own settings travel by didChangeConfiguration (synchronize.configurationSection);
    // only the command line needs a restart.
    if (!needsRestart((key) => e.affectsConfiguration(key))) return;
    if (this.state === 'missing' || this.state === 'failed' || this.state === 'stopped') {
      await this.restart(); // nothing running to interrupt: try the new command line at once
      return;
    }
    const choice = await vscode.window.showInformationMessage('exlsp: the server path or arguments changed.', 'Restart exlsp');
    if (choice) await this.restart();
  }

  // ---- accept word / line ----------------------------------------------------------------------

  private async acceptPart(kind: 'word' | 'line'): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    const command = kind === 'word' ? 'editor.action.inlineSuggest.acceptNextWord' : 'editor.action.inlineSuggest.acceptNextLine';
    if (!editor) {
      await vscode.commands.executeCommand(command);
      return;
    }
    const doc = editor.document;
    const changes: vscode.TextDocumentContentChangeEvent[] = [];
    const sub = vscode.workspace.onDidChangeTextDocument((e) => {
      if (e.document === doc) changes.push(...e.contentChanges);
    });
    try {
      await vscode.commands.executeCommand(command);
      await new Promise((r) => setTimeout(r, 30)); // the change event may trail the command's result
    } finally {
      sub.dispose();
    }
    const chars = insertedChars(changes);
    const conn = this.connection();
    if (chars > 0 && conn) {
      sendAccept(conn, { uri: doc.uri.toString(), kind, chars }).catch((err) =>
        this.output.warn(`exlsp.accept: ${err instanceof Error ? err.message : String(err)}`),
      );
      this.scheduleRefresh(300);
    }
  }

  // ---- status ----------------------------------------------------------------------------------

  private setState(state: ClientState, detail?: string): void {
    this.state = state;
    this.stateDetail = detail;
    this.render();
  }

  private busy(delta: number): void {
    this.inFlight = Math.max(0, this.inFlight + delta);
    this.render();
  }

  private render(): void {
    const view = formatStatusBar(this.status, this.state, this.inFlight, this.stateDetail);
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.backgroundColor =
      this.state === 'missing' || this.state === 'failed' || this.status?.loadError
        ? new vscode.ThemeColor('statusBarItem.errorBackground')
        : undefined;
  }

  private startPolling(): void {
    this.stopPolling();
    this.pollTimer = setInterval(() => void this.refreshStatus(), STATUS_POLL_MS);
  }

  private stopPolling(): void {
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = undefined;
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
  }

  private scheduleRefresh(delayMs: number): void {
    if (this.refreshTimer) return;
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = undefined;
      void this.refreshStatus();
    }, delayMs);
  }

  private async refreshStatus(): Promise<void> {
    const conn = this.connection();
    if (!conn || this.polling) return;
    this.polling = true;
    try {
      this.status = await fetchStatus(conn);
      // Until the model is loaded, look again soon (it loads in the background).
      if (!this.status.ready && !this.status.loadError) this.scheduleRefresh(500);
    } catch (err) {
      this.output.debug(`exlsp/status: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      this.polling = false;
      this.render();
    }
  }

  private async showStatus(): Promise<void> {
    await this.refreshStatus();
    type Item = vscode.QuickPickItem & { run?: () => unknown };
    const details: Item[] =
      this.state === 'running'
        ? statusDetails(this.status).map((label) => ({ label }))
        : [{ label: this.stateDetail ?? `The server is ${this.state}.` }];
    const conn = this.connection();
    const actions: Item[] = [
      { label: '$(comment-discussion) Open chat', run: () => this.chat.open() },
      { label: '$(debug-restart) Restart server', run: () => this.restart() },
      ...(conn
        ? [
            { label: '$(clear-all) Clear the completion cache', run: () => executeServerCommand(conn, CLEAR_CACHE_COMMAND) },
            { label: '$(extensions) Reload plugins', run: () => executeServerCommand(conn, RELOAD_PLUGINS_COMMAND) },
          ]
        : []),
      { label: '$(gear) Open settings', run: () => vscode.commands.executeCommand('workbench.action.openSettings', 'exlsp.') },
      { label: '$(output) Show log', run: () => this.output.show() },
    ];
    const picked = await vscode.window.showQuickPick<Item>(
      [...details, { label: 'Actions', kind: vscode.QuickPickItemKind.Separator }, ...actions],
      { title: 'exlsp', placeHolder: 'exlsp status — pick an action' },
    );
    try {
      await picked?.run?.();
      if (picked?.run) this.scheduleRefresh(0);
    } catch (err) {
      void vscode.window.showErrorMessage(`exlsp: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  dispose(): void {
    this.stopPolling();
    for (const d of this.disposables) d.dispose();
  }
}

let extension: ExlspExtension | undefined;

export function activate(context: vscode.ExtensionContext): void {
  extension = new ExlspExtension(context);
  context.subscriptions.push(extension);
  void extension.start();
}

export async function deactivate(): Promise<void> {
  const ext = extension;
  extension = undefined;
  if (ext) await ext.stop();
}
