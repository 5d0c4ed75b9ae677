import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { DeltaAccumulator } from '../../src/lib/progress';

describe('progress delta accumulation', () => {
  it('joins report messages between begin and end', () => {
    const acc = new DeltaAccumulator();
    assert.equal(acc.state, 'waiting');
    assert.equal(acc.apply({ kind: 'begin', title: 'exlsp chat', cancellable: true }), undefined);
    assert.equal(acc.state, 'streaming');
    assert.equal(acc.apply({ kind: 'report', message: 'Hel' }), 'Hel');
    assert.equal(acc.text, 'Hel');
    acc.apply({ kind: 'report', message: 'lo\n' });
    acc.apply({ kind: 'report', message: '```py\n' });
    acc.apply({ kind: 'report' }); // a report without a message (e.g. percentage only)
    acc.apply({ kind: 'report', message: '' });
    assert.equal(acc.text, 'Hello\n```py\n');
    assert.equal(acc.deltas, 3);
    acc.apply({ kind: 'end', message: 'done' });
    assert.equal(acc.state, 'done');
    assert.ok(acc.finished);
  });

  it('knows a cancelled end and ignores late reports and junk', () => {
    const acc = new DeltaAccumulator();
    acc.apply({ kind: 'report', message: 'a' }); // report before begin still counts
    acc.apply({ kind: 'end', message: 'cancelled' });
    assert.equal(acc.apply({ kind: 'report', message: 'late' }), undefined);
    acc.apply(null);
    acc.apply(undefined);
    acc.apply({ kind: 'weird', message: 'x' });
    assert.equal(acc.state, 'cancelled');
    assert.equal(acc.text, 'a');
  });

  it('keeps whitespace and unicode deltas exactly', () => {
    const acc = new DeltaAccumulator();
    const parts = ['  ', '\t', 'é', '😀', '\r\n', '中'];
    for (const p of parts) acc.apply({ kind: 'report', message: p });
    assert.equal(acc.text, parts.join(''));
  });
});
