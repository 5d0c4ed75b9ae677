// "Apply to file": the proposed new text of a document. No `vscode` import here.

/**
 * Replace `text[start:end]` with `code`. Without a range (no selection) the code replaces the
 * whole document. The replaced part's trailing newline is kept when the code has none, so a
 * block fixing a selection of whole lines does not glue its last line to the next.
 */
export function applyCodeBlock(text: string, code: string, range?: { start: number; end: number }): string {
  const start = range ? Math.max(0, Math.min(range.start, range.end, text.length)) : 0;
  const end = range ? Math.min(text.length, Math.max(range.start, range.end)) : text.length;
  const replaced = text.slice(start, end);
  let insert = code;
  const eol = replaced.endsWith('\r\n') ? '\r\n' : replaced.endsWith('\n') ? '\n' : '';
  if (eol && !insert.endsWith('\n')) insert += eol;
  else if (!eol && range && insert.endsWith('\n') && end < text.length) insert = insert.replace(/\r?\n$/, '');
  return text.slice(0, start) + insert + text.slice(end);
}

/** The code block's text for "Insert at cursor": its last newline dropped (the cursor line goes on). */
export function insertionText(code: string): string {
  return code.replace(/\r?\n$/, '');
}
