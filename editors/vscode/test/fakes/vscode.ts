// A small stand-in for the `vscode` module: enough of the API for the extension's activation and
// for vscode-languageclient to start, sync documents and serve inline completion — so the real
// extension code can run in Node against the real server. VS Code itself is not available here.
// Unknown members resolve to no-op functions that return disposables.
/* eslint-disable @typescript-eslint/no-explicit-any */
import Module from 'node:module';
import * as path from 'node:path';

type Listener<T> = (e: T) => any;

export class EventEmitter<T> {
  private listeners: Listener<T>[] = [];
  event = (listener: Listener<T>, thisArg?: any, disposables?: Disposable[]) => {
    const bound = thisArg ? listener.bind(thisArg) : listener;
    this.listeners.push(bound);
    const d = new Disposable(() => {
      this.listeners = this.listeners.filter((l) => l !== bound);
    });
    disposables?.push(d);
    return d;
  };
  fire(e: T): void {
    for (const l of [...this.listeners]) l(e);
  }
  dispose(): void {
    this.listeners = [];
  }
}

export class Disposable {
  static from(...items: { dispose(): any }[]): Disposable {
    return new Disposable(() => items.forEach((i) => i?.dispose()));
  }
  constructor(private fn: () => any = () => undefined) {}
  dispose(): void {
    const fn = this.fn;
    this.fn = () => undefined;
    fn();
  }
}

export class Uri {
  private constructor(
    readonly scheme: string,
    readonly authority: string,
    readonly path: string,
    readonly query: string,
    readonly fragment: string,
  ) {}
  static parse(value: string): Uri {
    const u = new URL(value);
    return new Uri(u.protocol.replace(/:$/, ''), u.host, decodeURIComponent(u.pathname), u.search.replace(/^\?/, ''), u.hash.replace(/^#/, ''));
  }
  static file(p: string): Uri {
    return new Uri('file', '', p, '', '');
  }
  static from(c: { scheme: string; authority?: string; path?: string; query?: string; fragment?: string }): Uri {
    return new Uri(c.scheme, c.authority ?? '', c.path ?? '', c.query ?? '', c.fragment ?? '');
  }
  static joinPath(base: Uri, ...parts: string[]): Uri {
    return base.with({ path: path.posix.join(base.path, ...parts) });
  }
  get fsPath(): string {
    return this.path;
  }
  with(c: { scheme?: string; path?: string; query?: string }): Uri {
    return new Uri(c.scheme ?? this.scheme, this.authority, c.path ?? this.path, c.query ?? this.query, this.fragment);
  }
  toString(): string {
    const p = this.path.split('/').map(encodeURIComponent).join('/');
    return `${this.scheme}://${this.authority}${p}${this.query ? '?' + this.query : ''}${this.fragment ? '#' + this.fragment : ''}`;
  }
  toJSON(): any {
    return { scheme: this.scheme, path: this.path, query: this.query };
  }
}

export class Position {
  constructor(readonly line: number, readonly character: number) {}
  isEqual(o: Position): boolean {
    return o.line === this.line && o.character === this.character;
  }
  isBefore(o: Position): boolean {
    return this.line < o.line || (this.line === o.line && this.character < o.character);
  }
}

export class Range {
  readonly start: Position;
  readonly end: Position;
  constructor(a: any, b: any, c?: number, d?: number) {
    if (typeof a === 'number') {
      this.start = new Position(a, b);
      this.end = new Position(c as number, d as number);
    } else {
      this.start = a;
      this.end = b;
    }
  }
  get isEmpty(): boolean {
    return this.start.isEqual(this.end);
  }
}

export class Selection extends Range {
  constructor(readonly anchor: Position, readonly active: Position) {
    super(anchor.isBefore(active) ? anchor : active, anchor.isBefore(active) ? active : anchor);
  }
}

export class CancellationTokenSource {
  private emitter = new EventEmitter<void>();
  token = {
    isCancellationRequested: false,
    onCancellationRequested: this.emitter.event,
  };
  cancel(): void {
    if (!this.token.isCancellationRequested) {
      this.token.isCancellationRequested = true;
      this.emitter.fire();
    }
  }
  dispose(): void {
    this.emitter.dispose();
  }
}

export class CancellationError extends Error {
  constructor() {
    super('Canceled');
    this.name = 'Canceled';
  }
}

// Base classes vscode-languageclient extends at load time.
export class CallHierarchyItem {}
export class CodeLens {}
export class CompletionItem {
  constructor(public label: any, public kind?: number) {}
}
export class DocumentLink {}
export class InlayHint {}
export class SymbolInformation {}
export class TypeHierarchyItem {}
export class CodeAction {}
export class Diagnostic {}

export class InlineCompletionItem {
  constructor(public insertText: any, public range?: Range, public command?: any) {}
}
export class InlineCompletionList {
  constructor(public items: InlineCompletionItem[]) {}
}
export class SnippetString {
  constructor(public value = '') {}
}
export class MarkdownString {
  constructor(public value = '', public supportThemeIcons = false) {}
}
export class ThemeColor {
  constructor(public id: string) {}
}
export class RelativePattern {
  constructor(public base: any, public pattern: string) {}
}
export class WorkspaceEdit {
  edits: { uri: Uri; range: Range; text: string }[] = [];
  replace(uri: Uri, range: Range, text: string): void {
    this.edits.push({ uri, range, text });
  }
}
export class TabInputTextDiff {
  constructor(public original: Uri, public modified: Uri) {}
}
export class TabInputText {
  constructor(public uri: Uri) {}
}
export class TabInputNotebook {}
export class TabInputCustom {}

export const StatusBarAlignment = { Left: 1, Right: 2 };
export const QuickPickItemKind = { Separator: -1, Default: 0 };
export const ProgressLocation = { SourceControl: 1, Window: 10, Notification: 15 };
export const LogLevel = { Off: 0, Trace: 1, Debug: 2, Info: 3, Warning: 4, Error: 5 };
export const InlineCompletionTriggerKind = { Invoke: 0, Automatic: 1 };
export const EndOfLine = { LF: 1, CRLF: 2 };
export const ViewColumn = { Active: -1, One: 1 };
export const UIKind = { Desktop: 1, Web: 2 };
export const version = '1.91.0';

/** A text document backed by a string. */
export class FakeTextDocument {
  version = 1;
  isClosed = false;
  isDirty = false;
  eol = EndOfLine.LF;
  constructor(readonly uri: Uri, readonly languageId: string, private text: string) {}
  get fileName(): string {
    return this.uri.fsPath;
  }
  get isUntitled(): boolean {
    return this.uri.scheme === 'untitled';
  }
  get lineCount(): number {
    return this.text.split('\n').length;
  }
  getText(range?: Range): string {
    if (!range) return this.text;
    return this.text.slice(this.offsetAt(range.start), this.offsetAt(range.end));
  }
  offsetAt(p: Position): number {
    const lines = this.text.split('\n');
    let off = 0;
    for (let i = 0; i < Math.min(p.line, lines.length); i++) off += lines[i].length + 1;
    const line = lines[Math.min(p.line, lines.length - 1)] ?? '';
    return off + Math.min(p.character, line.length);
  }
  positionAt(offset: number): Position {
    const before = this.text.slice(0, Math.max(0, Math.min(offset, this.text.length)));
    const lines = before.split('\n');
    return new Position(lines.length - 1, lines[lines.length - 1].length);
  }
  validateRange(r: Range): Range {
    return new Range(this.positionAt(this.offsetAt(r.start)), this.positionAt(this.offsetAt(r.end)));
  }
  lineAt(line: number): any {
    const text = this.text.split('\n')[line] ?? '';
    return { text, range: new Range(line, 0, line, text.length), lineNumber: line };
  }
  /** Apply an edit as VS Code would, firing onDidChangeTextDocument. */
  edit(range: Range, newText: string): void {
    const start = this.offsetAt(range.start);
    const end = this.offsetAt(range.end);
    this.text = this.text.slice(0, start) + newText + this.text.slice(end);
    this.version += 1;
    fake.events.didChangeTextDocument.fire({
      document: this,
      contentChanges: [{ range, rangeOffset: start, rangeLength: end - start, text: newText }],
      reason: undefined,
    });
  }
  save(): Promise<boolean> {
    return Promise.resolve(true);
  }
}

function noop(): any {
  return new Disposable();
}

/** Unknown members: a function returning a disposable (covers the register and on APIs). */
function lenient<T extends object>(target: T): T {
  return new Proxy(target, {
    get(t: any, key) {
      if (key in t) return t[key];
      if (typeof key === 'symbol' || key === 'then') return undefined;
      return noop;
    },
  });
}

export interface Recorded {
  errors: { message: string; items: string[] }[];
  infos: { message: string; items: string[] }[];
  warnings: string[];
  executed: { command: string; args: any[] }[];
  inlineProviders: { selector: any; provider: any }[];
  webviewProviders: Map<string, any>;
  statusItems: any[];
  output: string[];
  quickPicks: { items: any[]; options: any }[];
}

const settings = new Map<string, any>();
const commands = new Map<string, (...args: any[]) => any>();
const recorded: Recorded = {
  errors: [],
  infos: [],
  warnings: [],
  executed: [],
  inlineProviders: [],
  webviewProviders: new Map(),
  statusItems: [],
  output: [],
  quickPicks: [],
};
/** What the next message box "clicks" (by its text). */
const answers: ((message: string, items: string[]) => string | undefined)[] = [];
/** What the next quick pick picks (undefined: dismissed). */
const pickAnswers: ((items: any[]) => any)[] = [];

function configuration(section?: string): any {
  const prefix = section ? section + '.' : '';
  const nested = (): any => {
    const out: any = {};
    for (const [key, value] of settings) {
      if (!key.startsWith(prefix)) continue;
      const parts = key.slice(prefix.length).split('.');
      let node = out;
      for (const p of parts.slice(0, -1)) node = node[p] ??= {};
      node[parts[parts.length - 1]] = value;
    }
    return out;
  };
  return {
    get(key: string, dflt?: any) {
      const full = prefix + key;
      if (settings.has(full)) return settings.get(full);
      const sub = [...settings.keys()].filter((k) => k.startsWith(full + '.'));
      if (sub.length) {
        const all = nested();
        return key.split('.').reduce((n: any, p) => n?.[p], all);
      }
      return dflt;
    },
    has: (key: string) => settings.has(prefix + key),
    inspect: () => undefined,
    update: async () => undefined,
  };
}

function messageBox(kind: 'error' | 'info' | 'warning') {
  return (message: string, ...items: any[]) => {
    const labels = items.filter((i) => typeof i === 'string');
    if (kind === 'error') recorded.errors.push({ message, items: labels });
    else if (kind === 'info') recorded.infos.push({ message, items: labels });
    else recorded.warnings.push(message);
    const answer = answers.shift();
    return Promise.resolve(answer ? answer(message, labels) : undefined);
  };
}

function outputChannel(name: string): any {
  const log = (level: string) => (msg: string) => recorded.output.push(`[${name} ${level}] ${msg}`);
  return lenient({
    name,
    logLevel: LogLevel.Info,
    onDidChangeLogLevel: new EventEmitter<number>().event,
    append: log('append'),
    appendLine: log('line'),
    trace: log('trace'),
    debug: log('debug'),
    info: log('info'),
    warn: log('warn'),
    error: (m: any) => log('error')(m instanceof Error ? m.message : String(m)),
    show: () => undefined,
    hide: () => undefined,
    clear: () => undefined,
    replace: () => undefined,
    dispose: () => undefined,
  });
}

const events = {
  didChangeConfiguration: new EventEmitter<any>(),
  didOpenTextDocument: new EventEmitter<any>(),
  didCloseTextDocument: new EventEmitter<any>(),
  didChangeTextDocument: new EventEmitter<any>(),
  didSaveTextDocument: new EventEmitter<any>(),
  willSaveTextDocument: new EventEmitter<any>(),
  didChangeActiveTextEditor: new EventEmitter<any>(),
  didChangeVisibleTextEditors: new EventEmitter<any>(),
  didChangeWorkspaceFolders: new EventEmitter<any>(),
};

const textDocuments: FakeTextDocument[] = [];

export const workspace = lenient({
  getConfiguration: configuration,
  get textDocuments() {
    return textDocuments;
  },
  notebookDocuments: [],
  workspaceFolders: undefined,
  workspaceFile: undefined,
  onDidChangeConfiguration: events.didChangeConfiguration.event,
  onDidOpenTextDocument: events.didOpenTextDocument.event,
  onDidCloseTextDocument: events.didCloseTextDocument.event,
  onDidChangeTextDocument: events.didChangeTextDocument.event,
  onDidSaveTextDocument: events.didSaveTextDocument.event,
  onWillSaveTextDocument: events.willSaveTextDocument.event,
  onDidChangeWorkspaceFolders: events.didChangeWorkspaceFolders.event,
  registerTextDocumentContentProvider: () => new Disposable(),
  createFileSystemWatcher: () => lenient({ dispose: () => undefined }),
  openTextDocument: async (uri: Uri) => textDocuments.find((d) => d.uri.toString() === uri.toString()),
  applyEdit: async (edit: WorkspaceEdit) => {
    for (const e of edit.edits) textDocuments.find((d) => d.uri.toString() === e.uri.toString())?.edit(e.range, e.text);
    return true;
  },
});

const window_ = {
  activeTextEditor: undefined as any,
  visibleTextEditors: [] as any[],
  tabGroups: lenient({ all: [], activeTabGroup: { activeTab: undefined }, close: async () => true }),
  createOutputChannel: (name: string) => outputChannel(name),
  createStatusBarItem: () => {
    const item = lenient({ text: '', tooltip: '', command: undefined, name: '', show: () => undefined, hide: () => undefined, dispose: () => undefined });
    recorded.statusItems.push(item);
    return item;
  },
  showErrorMessage: messageBox('error'),
  showInformationMessage: messageBox('info'),
  showWarningMessage: messageBox('warning'),
  showQuickPick: async (items: any, options?: any) => {
    const list = await items;
    recorded.quickPicks.push({ items: list, options });
    const answer = pickAnswers.shift();
    return answer ? answer(list) : undefined;
  },
  withProgress: async (_o: any, task: any) => task({ report: () => undefined }, new CancellationTokenSource().token),
  registerWebviewViewProvider: (id: string, provider: any) => {
    recorded.webviewProviders.set(id, provider);
    return new Disposable();
  },
  onDidChangeActiveTextEditor: events.didChangeActiveTextEditor.event,
  onDidChangeVisibleTextEditors: events.didChangeVisibleTextEditors.event,
  showTextDocument: async (doc: any) => window_.visibleTextEditors.find((e) => e.document === doc) ?? window_.activeTextEditor,
};
export const window = lenient(window_);

export const commands_ = {
  registerCommand: (id: string, fn: (...args: any[]) => any) => {
    if (commands.has(id)) throw new Error(`command '${id}' already exists`);
    commands.set(id, fn);
    return new Disposable(() => commands.delete(id));
  },
  executeCommand: async (id: string, ...args: any[]) => {
    recorded.executed.push({ command: id, args });
    const fn = commands.get(id);
    return fn ? fn(...args) : undefined;
  },
  getCommands: async () => [...commands.keys()],
};
export { commands_ as commands };

export const languages = lenient({
  match: (selector: any, doc: FakeTextDocument) => {
    const filters = Array.isArray(selector) ? selector : [selector];
    for (const f of filters) {
      if (typeof f === 'string') {
        if (f === doc.languageId || f === '*') return 10;
      } else if ((!f.scheme || f.scheme === doc.uri.scheme) && (!f.language || f.language === doc.languageId)) {
        return 5;
      }
    }
    return 0;
  },
  registerInlineCompletionItemProvider: (selector: any, provider: any) => {
    recorded.inlineProviders.push({ selector, provider });
    return new Disposable(() => {
      const i = recorded.inlineProviders.findIndex((p) => p.provider === provider);
      if (i >= 0) recorded.inlineProviders.splice(i, 1);
    });
  },
  createDiagnosticCollection: () => lenient({ set: () => undefined, clear: () => undefined, delete: () => undefined, dispose: () => undefined }),
});

export const env = lenient({
  appName: 'Visual Studio Code',
  language: 'en',
  machineId: 'test',
  sessionId: 'test',
  uiKind: UIKind.Desktop,
  clipboard: { writeText: async () => undefined, readText: async () => '' },
  openExternal: async () => true,
});

export const extensions = lenient({ getExtension: () => undefined, all: [] });

/** Test controls. */
export const fake = {
  settings,
  commands,
  recorded,
  answers,
  pickAnswers,
  events,
  textDocuments,
  window: window_,
  openDocument(uri: Uri, languageId: string, text: string): FakeTextDocument {
    const doc = new FakeTextDocument(uri, languageId, text);
    textDocuments.push(doc);
    events.didOpenTextDocument.fire(doc);
    return doc;
  },
  showEditor(doc: FakeTextDocument, selection = new Selection(new Position(0, 0), new Position(0, 0))): any {
    const editor = {
      document: doc,
      selection,
      selections: [selection],
      viewColumn: 1,
      edit: async (cb: (b: any) => void) => {
        const ops: { range: Range; text: string }[] = [];
        cb({ replace: (range: Range, text: string) => ops.push({ range, text }), insert: (p: Position, text: string) => ops.push({ range: new Range(p, p), text }) });
        for (const op of ops.reverse()) doc.edit(op.range, op.text);
        return true;
      },
    };
    window_.activeTextEditor = editor;
    window_.visibleTextEditors = [editor];
    events.didChangeActiveTextEditor.fire(editor);
    return editor;
  },
  changeSettings(values: Record<string, any>): void {
    for (const [k, v] of Object.entries(values)) settings.set(k, v);
    const keys = Object.keys(values);
    events.didChangeConfiguration.fire({
      affectsConfiguration: (section: string) => keys.some((k) => k === section || k.startsWith(section + '.') || section.startsWith(k + '.')),
    });
  },
};

/** For API enums and classes this fake does not model: any member, call or `new` gives another. */
function universal(name: string): any {
  const fn = function () {
    return undefined;
  };
  return new Proxy(fn, {
    get(_t, key) {
      if (key === 'toString' || key === Symbol.toPrimitive) return () => name;
      if (typeof key === 'symbol' || key === 'then') return undefined;
      return universal(`${name}.${String(key)}`);
    },
    apply: () => undefined,
    construct: () => ({}),
  });
}

let installed = false;
/** Make `require('vscode')` return this module (call before loading the extension). */
export function install(): void {
  if (installed) return;
  installed = true;
  const self = require.cache[__filename];
  if (self) {
    const real = self.exports;
    self.exports = new Proxy(real, {
      get: (t, key) => (key in t || typeof key === 'symbol' ? t[key] : universal(String(key))),
    });
  }
  const mod = Module as unknown as { _resolveFilename: (request: string, ...rest: any[]) => string };
  const original = mod._resolveFilename;
  mod._resolveFilename = function (request: string, ...rest: any[]) {
    if (request === 'vscode') return __filename;
    return original.call(this, request, ...rest);
  };
}
