import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';

import { checkExecutable, classifySpawnError, executableErrorMessage } from '../../src/lib/executable';

describe('missing-executable detection (spawn test)', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'exlsp-exe-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('a name that is not on PATH is missing', async () => {
    const r = await checkExecutable('exlsp-definitely-not-installed-4711', { env: { PATH: dir } });
    assert.equal(r.ok, false);
    assert.equal(!r.ok && r.reason, 'missing');
    const msg = executableErrorMessage(r, 'exlsp-definitely-not-installed-4711') ?? '';
    assert.match(msg, /was not found/);
    assert.match(msg, /exlsp\.serverPath/);
  });

  it('a full path that does not exist is missing', async () => {
    const r = await checkExecutable(path.join(dir, 'nope', 'exlsp'));
    assert.equal(!r.ok && r.reason, 'missing');
  });

  it('a file without the execute bit is not executable', async () => {
    const file = path.join(dir, 'noexec');
    writeFileSync(file, '#!/bin/sh\necho hi\n');
    chmodSync(file, 0o644);
    const r = await checkExecutable(file);
    assert.equal(!r.ok && r.reason, 'not-executable');
    assert.match(executableErrorMessage(r, file) ?? '', /not executable/);
  });

  it('a working executable reports its version', async () => {
    const file = path.join(dir, 'fake-exlsp');
    writeFileSync(file, '#!/bin/sh\n[ "$1" = "--version" ] && echo "exlsp 9.9.9" && exit 0\nexit 3\n');
    chmodSync(file, 0o755);
    assert.deepEqual(await checkExecutable(file), { ok: true, version: 'exlsp 9.9.9' });
    assert.equal(executableErrorMessage({ ok: true }, file), undefined);
  });

  it('an executable that fails says how', async () => {
    const file = path.join(dir, 'broken-exlsp');
    writeFileSync(file, '#!/bin/sh\necho "ModuleNotFoundError: No module named exlsp" >&2\nexit 1\n');
    chmodSync(file, 0o755);
    const r = await checkExecutable(file);
    assert.equal(!r.ok && r.reason, 'failed');
    assert.match(executableErrorMessage(r, file) ?? '', /ModuleNotFoundError/);
  });

  it('classifies spawn errors', () => {
    const enoent = Object.assign(new Error('spawn x ENOENT'), { code: 'ENOENT' });
    assert.equal((classifySpawnError(enoent) as { reason: string }).reason, 'missing');
    const eacces = Object.assign(new Error('spawn x EACCES'), { code: 'EACCES' });
    assert.equal((classifySpawnError(eacces) as { reason: string }).reason, 'not-executable');
  });
});
