// Chat message assembly for `exlsp/chat`, slash commands included. No `vscode` import here.
//
// The server expands a slash command in the LAST user message (`/fix the off-by-one`) into its
// own system + user messages, using the selection (or without one, the whole document) of
// `textDocument`. So the client sends the command text as typed, with the document and the
// selection; earlier slash-command turns in the history are replaced by a plain sentence, since
// only the last message is expanded.
//
// With a session id the server keeps the conversation (docs/chat-sessions.md): the request then
// carries only the new user turn, and the server adds the stored history itself.

export type Role = 'system' | 'user' | 'assistant';

export interface ChatMessage {
  role: Role;
  content: string;
}

export interface Position {
  line: number;
  character: number;
}

export interface Range {
  start: Position;
  end: Position;
}

export interface ChatParams {
  messages: ChatMessage[];
  textDocument?: { uri: string };
  selection?: Range;
  workDoneToken?: string | number;
  maxTokens?: number;
  sessionId?: string;
}

export interface SlashCommand {
  name: string;
  description: string;
  /** What an earlier turn with this command reads as in later requests. */
  asHistory: string;
}

export const SLASH_COMMANDS: readonly SlashCommand[] = [
  { name: 'explain', description: 'Explain the selection (or the file)', asHistory: 'Explain the selected code' },
  { name: 'fix', description: 'Find and fix bugs in the selection (or the file)', asHistory: 'Find and fix the bugs in the selected code' },
  { name: 'test', description: 'Write unit tests for the selection (or the file)', asHistory: 'Write unit tests for the selected code' },
  { name: 'doc', description: 'Write documentation comments for the selection (or the file)', asHistory: 'Write documentation for the selected code' },
];

export interface ParsedSlash {
  command: SlashCommand;
  argument: string;
}

/** `/fix  the off-by-one` -> {command: fix, argument: "the off-by-one"}; unknown commands -> undefined. */
export function parseSlash(input: string): ParsedSlash | undefined {
  const m = /^\/([A-Za-z][\w-]*)(?:\s+([\s\S]*))?$/.exec(input.trim());
  if (!m) return undefined;
  const command = SLASH_COMMANDS.find((c) => c.name === m[1].toLowerCase());
  return command ? { command, argument: (m[2] ?? '').trim() } : undefined;
}

/** One turn of the conversation as the panel keeps it. */
export interface Turn {
  role: 'user' | 'assistant';
  content: string;
  /** The document and selection the turn was about (for "Apply to file"). */
  uri?: string;
  selection?: Range;
  /** The assistant turn ended early (Stop) or failed. */
  stopped?: boolean;
}

export interface EditorContext {
  uri: string;
  /** Omitted or empty: no selection (slash commands then use the whole document). */
  selection?: Range;
}

export function isEmptyRange(r: Range | undefined): boolean {
  return !r || (r.start.line === r.end.line && r.start.character === r.end.character);
}

export interface AssembleOptions {
  /** Earlier turns, oldest first (the new input is not among them). */
  history: readonly Turn[];
  input: string;
  editor?: EditorContext;
  workDoneToken?: string | number;
  maxTokens?: number;
  /** At most this many earlier turns are sent (the model's context is small). */
  maxHistoryTurns?: number;
  /** The server's session: only the new turn is sent (the server has the history). */
  sessionId?: string;
}

export interface Assembled {
  params: ChatParams;
  /** The user turn to append to the history. */
  turn: Turn;
  slash?: ParsedSlash;
}

export function historyContent(turn: Turn): string {
  if (turn.role !== 'user') return turn.content;
  const slash = parseSlash(turn.content);
  if (!slash) return turn.content;
  return slash.argument ? `${slash.command.asHistory}: ${slash.argument}` : `${slash.command.asHistory}.`;
}

/** The `exlsp/chat` params for a new input, given the history and the editor's state. */
export function assembleChat(opts: AssembleOptions): Assembled {
  const input = opts.input.trim();
  if (!input) throw new Error('empty chat input');
  const slash = parseSlash(input);
  const keep = opts.sessionId !== undefined ? 0 : opts.maxHistoryTurns ?? 12;
  const earlier = keep > 0 ? opts.history.filter((t) => t.content.trim()).slice(-keep) : [];
  // A history must not open with an assistant turn cut from its question.
  while (earlier.length && earlier[0].role === 'assistant') earlier.shift();
  const messages: ChatMessage[] = earlier.map((t) => ({ role: t.role, content: historyContent(t) }));
  // A slash command canonicalises its name (`/Fix` -> `/fix`) so the server recognises it.
  const content = slash ? `/${slash.command.name}${slash.argument ? ' ' + slash.argument : ''}` : input;
  messages.push({ role: 'user', content });
  const params: ChatParams = { messages };
  const turn: Turn = { role: 'user', content };
  if (opts.editor) {
    params.textDocument = { uri: opts.editor.uri };
    turn.uri = opts.editor.uri;
    if (!isEmptyRange(opts.editor.selection)) {
      params.selection = opts.editor.selection;
      turn.selection = opts.editor.selection;
    }
  }
  if (opts.workDoneToken !== undefined) params.workDoneToken = opts.workDoneToken;
  if (opts.maxTokens !== undefined) params.maxTokens = opts.maxTokens;
  if (opts.sessionId !== undefined) params.sessionId = opts.sessionId;
  return { params, turn, slash };
}

/** Completions for the input box: the slash commands that start with what was typed. */
export function slashSuggestions(prefix: string): SlashCommand[] {
  if (!prefix.startsWith('/') || /\s/.test(prefix)) return [];
  const typed = prefix.slice(1).toLowerCase();
  return SLASH_COMMANDS.filter((c) => c.name.startsWith(typed));
}

/** The line under an answer: how it ended and what it cost. */
export function chatFooter(outcome: {
  cancelled: boolean;
  result?: { stopReason?: string; promptTokens?: number; reusedTokens?: number; generatedTokens?: number };
}): string {
  if (outcome.cancelled) return 'Stopped.';
  const r = outcome.result;
  if (!r) return '';
  const parts: string[] = [];
  if (typeof r.generatedTokens === 'number') parts.push(`${r.generatedTokens} tokens`);
  if (typeof r.promptTokens === 'number' && r.promptTokens > 0) {
    parts.push(`prompt ${r.promptTokens} tokens, ${r.reusedTokens ?? 0} reused from cache`);
  }
  if (r.stopReason === 'length' || r.stopReason === 'max_tokens') parts.push('cut at the token limit (exlsp.chat.maxTokens)');
  return parts.join(' · ');
}
