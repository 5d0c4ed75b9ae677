import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { assembleChat, chatFooter, parseSlash, slashSuggestions, Turn } from '../../src/lib/chat';

const SEL = { start: { line: 1, character: 0 }, end: { line: 3, character: 4 } };
const EMPTY = { start: { line: 2, character: 5 }, end: { line: 2, character: 5 } };

describe('slash commands', () => {
  it('parses known commands with their argument', () => {
    assert.equal(parseSlash('/explain')?.command.name, 'explain');
    assert.deepEqual(
      { name: parseSlash('  /Fix   the off-by-one\nplease ')?.command.name, arg: parseSlash('/Fix   the off-by-one\nplease')?.argument },
      { name: 'fix', arg: 'the off-by-one\nplease' },
    );
    assert.equal(parseSlash('/test')?.command.name, 'test');
    assert.equal(parseSlash('/doc')?.command.name, 'doc');
    assert.equal(parseSlash('/nope'), undefined);
    assert.equal(parseSlash('explain /fix'), undefined);
    assert.equal(parseSlash('/fixme'), undefined);
  });

  it('suggests commands for a typed prefix', () => {
    assert.deepEqual(slashSuggestions('/').map((c) => c.name), ['explain', 'fix', 'test', 'doc']);
    assert.deepEqual(slashSuggestions('/e').map((c) => c.name), ['explain']);
    assert.deepEqual(slashSuggestions('/e x'), []);
    assert.deepEqual(slashSuggestions('e'), []);
  });
});

describe('chat message assembly', () => {
  it('a plain question with the editor context', () => {
    const a = assembleChat({ history: [], input: '  What does this do? ', editor: { uri: 'file:///a.py', selection: SEL }, workDoneToken: 't1' });
    assert.deepEqual(a.params, {
      messages: [{ role: 'user', content: 'What does this do?' }],
      textDocument: { uri: 'file:///a.py' },
      selection: SEL,
      workDoneToken: 't1',
    });
    assert.deepEqual(a.turn, { role: 'user', content: 'What does this do?', uri: 'file:///a.py', selection: SEL });
    assert.equal(a.slash, undefined);
  });

  it('/fix sends the command as typed, with the document and the selection range', () => {
    const a = assembleChat({ history: [], input: '/FIX the loop', editor: { uri: 'file:///b.ts', selection: SEL } });
    assert.deepEqual(a.params.messages, [{ role: 'user', content: '/fix the loop' }]);
    assert.deepEqual(a.params.textDocument, { uri: 'file:///b.ts' });
    assert.deepEqual(a.params.selection, SEL);
    assert.equal(a.slash?.command.name, 'fix');
  });

  it('an empty selection is left out (the server then uses the whole document)', () => {
    const a = assembleChat({ history: [], input: '/explain', editor: { uri: 'file:///c.go', selection: EMPTY } });
    assert.equal('selection' in a.params, false);
    assert.deepEqual(a.params.textDocument, { uri: 'file:///c.go' });
  });

  it('without an editor there is no textDocument', () => {
    const a = assembleChat({ history: [], input: 'hello', maxTokens: 64 });
    assert.deepEqual(a.params, { messages: [{ role: 'user', content: 'hello' }], maxTokens: 64 });
  });

  it('history: earlier slash commands become sentences, empty answers drop, oldest turns go first', () => {
    const history: Turn[] = [
      { role: 'user', content: 'first' },
      { role: 'assistant', content: 'one' },
      { role: 'user', content: '/explain' },
      { role: 'assistant', content: 'It adds.' },
      { role: 'user', content: '/fix the sign' },
      { role: 'assistant', content: '', stopped: true },
    ];
    const a = assembleChat({ history, input: 'and now?', maxHistoryTurns: 4 });
    assert.deepEqual(a.params.messages, [
      { role: 'user', content: 'Explain the selected code.' },
      { role: 'assistant', content: 'It adds.' },
      { role: 'user', content: 'Find and fix the bugs in the selected code: the sign' },
      { role: 'user', content: 'and now?' },
    ]);
  });

  it('history never opens with an assistant turn', () => {
    const history: Turn[] = [
      { role: 'user', content: 'q1' },
      { role: 'assistant', content: 'a1' },
      { role: 'user', content: 'q2' },
      { role: 'assistant', content: 'a2' },
    ];
    const a = assembleChat({ history, input: 'q3', maxHistoryTurns: 3 });
    assert.deepEqual(a.params.messages.map((m) => m.content), ['q2', 'a2', 'q3']);
    const none = assembleChat({ history, input: 'q3', maxHistoryTurns: 0 });
    assert.deepEqual(none.params.messages.map((m) => m.content), ['q3']);
  });

  it('rejects empty input', () => {
    assert.throws(() => assembleChat({ history: [], input: '   ' }));
  });

  it('footer says how the answer ended', () => {
    assert.equal(chatFooter({ cancelled: true }), 'Stopped.');
    assert.equal(
      chatFooter({ cancelled: false, result: { stopReason: 'eos', promptTokens: 100, reusedTokens: 60, generatedTokens: 12 } }),
      '12 tokens · prompt 100 tokens, 60 reused from cache',
    );
    assert.match(chatFooter({ cancelled: false, result: { stopReason: 'length', generatedTokens: 512 } }), /token limit/);
  });
});
