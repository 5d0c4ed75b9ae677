import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { applyCodeBlock, insertionText } from '../../src/lib/apply';

describe('apply a code block to a file', () => {
  const text = 'a = 1\ndef f():\n    return x\nb = 2\n';

  it('replaces a whole-line selection and keeps the line break', () => {
    const start = text.indexOf('def');
    const end = text.indexOf('b = 2');
    assert.equal(applyCodeBlock(text, 'def f():\n    return 0', { start, end }), 'a = 1\ndef f():\n    return 0\nb = 2\n');
    assert.equal(applyCodeBlock(text, 'def f():\n    return 0\n', { start, end }), 'a = 1\ndef f():\n    return 0\nb = 2\n');
  });

  it('replaces a part of a line without adding a line break', () => {
    const start = text.indexOf('x');
    assert.equal(applyCodeBlock(text, 'y + 1\n', { start, end: start + 1 }), 'a = 1\ndef f():\n    return y + 1\nb = 2\n');
  });

  it('replaces the whole file without a selection', () => {
    assert.equal(applyCodeBlock(text, 'print(1)\n'), 'print(1)\n');
    assert.equal(applyCodeBlock(text, 'print(1)'), 'print(1)\n');
    assert.equal(applyCodeBlock('x', 'y\n'), 'y\n');
  });

  it('keeps CRLF', () => {
    const crlf = 'a\r\nb\r\nc\r\n';
    assert.equal(applyCodeBlock(crlf, 'B', { start: 3, end: 6 }), 'a\r\nB\r\nc\r\n');
  });

  it('accepts a reversed or out-of-bounds range', () => {
    assert.equal(applyCodeBlock('hello', 'J', { start: 1, end: 0 }), 'Jello');
    assert.equal(applyCodeBlock('hello', '!', { start: 5, end: 99 }), 'hello!');
  });

  it('insert at cursor drops the final newline', () => {
    assert.equal(insertionText('a()\n'), 'a()');
    assert.equal(insertionText('a()\r\n'), 'a()');
    assert.equal(insertionText('a()\n\n'), 'a()\n');
  });
});
