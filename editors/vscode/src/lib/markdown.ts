// Markdown -> safe HTML for the chat webview, and the code blocks of an answer. No `vscode` import.
//
// markdown-it with `html: false` escapes every raw HTML tag in the model's output; its link
// validator refuses javascript:/vbscript:/file:/data: URLs. Code blocks get action buttons that
// name the block by its index, the same index `extractCodeBlocks` gives it.

import MarkdownIt from 'markdown-it';

export interface CodeBlock {
  index: number;
  /** The fence's language (first word of the info string), "" if none. */
  language: string;
  code: string;
}

type Token = MarkdownIt.Token;

const md = new MarkdownIt({ html: false, linkify: false, typographer: false, breaks: false });

function escapeHtml(s: string): string {
  return md.utils.escapeHtml(s);
}

function languageOf(info: string): string {
  const word = info.trim().split(/\s+/)[0] ?? '';
  return /^[\w+#.-]{1,32}$/.test(word) ? word : '';
}

function isCode(token: Token): boolean {
  return token.type === 'fence' || token.type === 'code_block';
}

interface RenderEnv {
  blockIndex?: number;
  actions?: boolean;
}

function renderCode(tokens: Token[], idx: number, _options: unknown, env: RenderEnv): string {
  const token = tokens[idx];
  const index = env.blockIndex ?? 0;
  env.blockIndex = index + 1;
  const language = token.type === 'fence' ? languageOf(token.info) : '';
  const cls = language ? ` class="language-${escapeHtml(language)}"` : '';
  const label = language ? `<span class="lang">${escapeHtml(language)}</span>` : '';
  const actions = env.actions === false
    ? ''
    : `<div class="code-actions">${label}` +
      `<button type="button" data-action="insert" data-block="${index}" title="Insert at the cursor">Insert at cursor</button>` +
      `<button type="button" data-action="apply" data-block="${index}" title="Show a diff against the file, then apply">Apply to file</button>` +
      `<button type="button" data-action="copy" data-block="${index}" title="Copy to the clipboard">Copy</button>` +
      `</div>`;
  return `<div class="code-block" data-block="${index}">${actions}<pre><code${cls}>${escapeHtml(token.content)}</code></pre></div>\n`;
}

md.renderer.rules.fence = renderCode as never;
md.renderer.rules.code_block = renderCode as never;

// Links open outside the webview; never let them name an opener.
const defaultLinkOpen = md.renderer.rules.link_open ?? ((tokens, idx, options, _env, self) => self.renderToken(tokens, idx, options));
md.renderer.rules.link_open = (tokens, idx, options, env, self) => {
  tokens[idx].attrSet('rel', 'noopener noreferrer');
  return defaultLinkOpen(tokens, idx, options, env, self);
};
// Images would load remote content (a tracking pixel in a model's answer): show the alt text.
md.renderer.rules.image = (tokens, idx) => {
  const token = tokens[idx];
  const alt = token.children ? token.children.map((c) => c.content).join('') : token.content;
  return `<span class="image-alt">[image: ${escapeHtml(alt)}]</span>`;
};

/** Render an answer (possibly still streaming: an open fence renders as a code block). */
export function renderMarkdown(text: string, options: { actions?: boolean } = {}): string {
  const env: RenderEnv = { blockIndex: 0, actions: options.actions };
  return md.render(text, env as MarkdownIt.Env);
}

/** The code blocks of an answer, in the order `renderMarkdown` numbers them. */
export function extractCodeBlocks(text: string): CodeBlock[] {
  const blocks: CodeBlock[] = [];
  for (const token of md.parse(text, {})) {
    if (!isCode(token)) continue;
    blocks.push({
      index: blocks.length,
      language: token.type === 'fence' ? languageOf(token.info) : '',
      code: token.content,
    });
  }
  return blocks;
}

/** Plain text escaped for HTML (user turns are shown as typed, not as Markdown). */
export function renderPlain(text: string): string {
  return `<p class="plain">${escapeHtml(text).replace(/\n/g, '<br>')}</p>`;
}
