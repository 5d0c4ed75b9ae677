// Starts the REAL `exlsp serve` and talks to it the way the extension's LanguageClient does:
// JSON-RPC over the child's stdio, VS Code's client capabilities, the extension's settings.
import { ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import {
  ClientCapabilities,
  createProtocolConnection,
  InitializeParams,
  InitializeResult,
  ProtocolConnection,
  StreamMessageReader,
  StreamMessageWriter,
  WorkDoneProgress,
  WorkDoneProgressCreateRequest,
} from 'vscode-languageserver-protocol/node';

import { serverCommand, toInitializationOptions } from '../../src/lib/settings';
import { defaultSection, REPO_ROOT } from '../support';

/** The exlsp executable: $EXLSP_SERVER, else the repository's .venv. */
export function serverExecutable(): string | undefined {
  const fromEnv = process.env.EXLSP_SERVER;
  if (fromEnv) return fromEnv;
  const venv = path.join(REPO_ROOT, '.venv', 'bin', 'exlsp');
  return existsSync(venv) ? venv : undefined;
}

/** What VS Code 1.91+ with vscode-languageclient 10 announces (the parts exlsp looks at). */
export const VSCODE_CAPABILITIES: ClientCapabilities = {
  general: {
    positionEncodings: ['utf-16'],
    regularExpressions: { engine: 'ECMAScript', version: 'ES2020' },
    markdown: { parser: 'marked', version: '1.1.0' },
    staleRequestSupport: { cancel: true, retryOnContentModified: [] },
  },
  window: {
    workDoneProgress: true,
    showMessage: { messageActionItem: { additionalPropertiesSupport: true } },
    showDocument: { support: true },
  },
  workspace: {
    applyEdit: true,
    configuration: true,
    workspaceFolders: true,
    didChangeConfiguration: { dynamicRegistration: true },
    executeCommand: { dynamicRegistration: true },
  },
  textDocument: {
    synchronization: { dynamicRegistration: true, willSave: true, willSaveWaitUntil: true, didSave: true },
    completion: {
      dynamicRegistration: true,
      contextSupport: true,
      completionItem: { snippetSupport: true, insertReplaceSupport: true, documentationFormat: ['markdown', 'plaintext'] },
    },
    inlineCompletion: { dynamicRegistration: true },
  },
};

export interface ProgressEvent {
  token: string | number;
  value: { kind?: string; message?: string; percentage?: number; title?: string };
}

export interface Harness {
  conn: ProtocolConnection;
  proc: ChildProcessWithoutNullStreams;
  init: InitializeResult;
  /** `$/progress` on tokens the server created (the model load), in order. */
  progress: ProgressEvent[];
  /** `window/workDoneProgress/create` tokens the server asked for. */
  created: (string | number)[];
  messages: { type: number; message: string }[];
  stderr: () => string;
  close: () => Promise<number | null>;
}

export interface ServerOptions {
  /** XDG_STATE_HOME (where chat sessions are kept); default: the server's own temporary one. */
  stateHome?: string;
}

export async function startServer(executable: string, opts: ServerOptions = {}): Promise<Harness> {
  const tmp = mkdtempSync(path.join(tmpdir(), 'exlsp-vscode-'));
  const runtime = path.join(tmp, 'run');
  const config = path.join(tmp, 'config');
  const state = opts.stateHome ?? path.join(tmp, 'state');
  mkdirSync(runtime, { mode: 0o700 });
  mkdirSync(config);
  // The command line the extension builds from its settings: the defaults, plus serverArgs
  // `--keep-alive 0` (nothing attaches to this server; without it, exit lingers 5 s).
  const section = defaultSection();
  const cmd = serverCommand(executable, ['--keep-alive', '0']);
  const env: NodeJS.ProcessEnv = { ...process.env, XDG_RUNTIME_DIR: runtime, XDG_CONFIG_HOME: config, XDG_STATE_HOME: state };
  delete env.EXLSP_SOCKET; // the socket goes under the temporary XDG_RUNTIME_DIR
  const proc = spawn(cmd.command, cmd.args, {
    cwd: tmp,
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let errText = '';
  proc.stderr.on('data', (b: Buffer) => {
    errText += b.toString();
    if (errText.length > 200_000) errText = errText.slice(-100_000);
  });
  const conn = createProtocolConnection(new StreamMessageReader(proc.stdout), new StreamMessageWriter(proc.stdin));
  const progress: ProgressEvent[] = [];
  const created: (string | number)[] = [];
  const messages: { type: number; message: string }[] = [];
  // As vscode-languageclient does: a created token gets a progress handler (the model load shows
  // as a progress notification). Never register a plain '$/progress' notification handler: it
  // would replace vscode-jsonrpc's own dispatch to onProgress handlers.
  conn.onRequest(WorkDoneProgressCreateRequest.type, (p) => {
    created.push(p.token);
    conn.onProgress(WorkDoneProgress.type, p.token, (value) => {
      progress.push({ token: p.token, value });
    });
  });
  conn.onNotification('window/showMessage', (p: { type: number; message: string }) => {
    messages.push(p);
  });
  conn.onNotification('window/logMessage', () => undefined);
  conn.onRequest('client/registerCapability', () => null);
  conn.onRequest('workspace/configuration', (p: { items: unknown[] }) => p.items.map(() => null));
  conn.listen();

  const params: InitializeParams = {
    processId: process.pid,
    clientInfo: { name: 'Visual Studio Code', version: '1.91.0' },
    locale: 'en',
    rootUri: null,
    workspaceFolders: null,
    capabilities: VSCODE_CAPABILITIES,
    initializationOptions: toInitializationOptions(section),
  };
  const init = await conn.sendRequest<InitializeResult>('initialize', params);
  await conn.sendNotification('initialized', {});
  let exited: Promise<number | null> | undefined;
  const exitPromise = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  return {
    conn,
    proc,
    init,
    progress,
    created,
    messages,
    stderr: () => errText,
    close: async () => {
      exited ??= (async () => {
        try {
          await withTimeout(conn.sendRequest('shutdown'), 10000);
          await conn.sendNotification('exit');
        } catch {
          proc.kill();
        }
        const timer = setTimeout(() => proc.kill('SIGKILL'), 20000);
        const code = await exitPromise;
        clearTimeout(timer);
        conn.dispose();
        rmSync(tmp, { recursive: true, force: true });
        return code;
      })();
      return exited;
    },
  };
}

export function withTimeout<T>(p: Promise<T>, ms: number, what = 'operation'): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    }),
  ]);
}

/** Poll until `check` returns a value (not undefined), or fail. */
export async function eventually<T>(check: () => Promise<T | undefined> | T | undefined, ms = 15000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what} not reached in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
