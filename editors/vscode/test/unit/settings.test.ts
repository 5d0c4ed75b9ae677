import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';

import {
  didChangeConfigurationParams,
  expandPath,
  needsRestart,
  serverCommand,
  toInitializationOptions,
} from '../../src/lib/settings';
import { defaultSection, PACKAGE_ROOT, packageJson, REPO_ROOT } from '../support';

describe('settings -> initializationOptions', () => {
  it('keeps only the server sections, nested as the server reads them', () => {
    const section = {
      serverPath: '/opt/exlsp',
      serverArgs: ['--lanes', '4'],
      completion: { enabled: false, maxTokens: 32, fallback: 'auto' },
      chat: { maxTokens: 256 },
      plugins: { myplugin: { depth: 2 } },
    };
    assert.deepEqual(toInitializationOptions(section), {
      completion: { enabled: false, maxTokens: 32, fallback: 'auto' },
      chat: { maxTokens: 256 },
      plugins: { myplugin: { depth: 2 } },
    });
  });

  it('drops unset (null/undefined) values and functions, so server defaults apply', () => {
    const section = {
      completion: { enabled: true, maxTokens: null, budgetTokens: undefined, has: () => true },
      chat: null,
      get: () => 1,
    };
    assert.deepEqual(toInitializationOptions(section), { completion: { enabled: true } });
    assert.deepEqual(toInitializationOptions(undefined), {});
    assert.deepEqual(toInitializationOptions('nonsense'), {});
  });

  it('maps the defaults VS Code reports for package.json to the server defaults', () => {
    const opts = toInitializationOptions(defaultSection());
    assert.equal((opts.completion as Record<string, unknown>).enabled, true);
    assert.equal((opts.completion as Record<string, unknown>).maxTokens, 64);
    assert.equal((opts.chat as Record<string, unknown>).maxTokens, 512);
    assert.equal('serverPath' in opts, false);
  });

  it('didChangeConfiguration carries the section under "exlsp", as vscode-languageclient sends it', () => {
    const params = didChangeConfigurationParams({ completion: { enabled: false }, serverPath: 'exlsp' });
    assert.deepEqual(params, { settings: { exlsp: { completion: { enabled: false }, serverPath: 'exlsp' } } });
  });
});

describe('server command line', () => {
  it('defaults to `exlsp serve`', () => {
    assert.deepEqual(serverCommand(undefined, undefined), { command: 'exlsp', args: ['serve'] });
    assert.deepEqual(serverCommand('  ', 'bad'), { command: 'exlsp', args: ['serve'] });
  });

  it('appends serverArgs after `serve` and ignores non-strings', () => {
    assert.deepEqual(serverCommand('/opt/bin/exlsp', ['--model', '/m.gguf', 3]), {
      command: '/opt/bin/exlsp',
      args: ['serve', '--model', '/m.gguf'],
    });
  });

  it('expands ~ and ${env:NAME}', () => {
    assert.equal(expandPath('~/venv/bin/exlsp', {}, '/home/u'), path.join('/home/u', 'venv/bin/exlsp'));
    assert.equal(expandPath('${env:VENV}/bin/exlsp', { VENV: '/v' }, '/home/u'), '/v/bin/exlsp');
    assert.equal(expandPath('exlsp', {}, '/home/u'), 'exlsp');
  });

  it('restarts only for the command line settings', () => {
    assert.equal(needsRestart((k) => k === 'exlsp.serverPath'), true);
    assert.equal(needsRestart((k) => k === 'exlsp.serverArgs'), true);
    assert.equal(needsRestart((k) => k === 'exlsp.completion.enabled'), false);
  });
});

describe('package.json', () => {
  const pkg = packageJson();

  it('targets VS Code >= 1.91 with vscode-languageclient >= 10.0.1 (inline completion built in)', () => {
    assert.equal(pkg.engines.vscode, '^1.91.0');
    const installed = JSON.parse(
      readFileSync(path.join(PACKAGE_ROOT, 'node_modules', 'vscode-languageclient', 'package.json'), 'utf8'),
    );
    const [major, minor, patch] = installed.version.split('.').map(Number);
    assert.ok(major === 10 && (minor > 0 || patch >= 1), installed.version);
  });

  it('contributes the commands, keybindings, chat view and configuration', () => {
    const commands = new Set(pkg.contributes.commands.map((c: { command: string }) => c.command));
    for (const id of ['exlsp.chat.open', 'exlsp.acceptWord', 'exlsp.acceptLine', 'exlsp.status', 'exlsp.restart']) {
      assert.ok(commands.has(id), id);
    }
    for (const kb of pkg.contributes.keybindings) {
      assert.ok(commands.has(kb.command), kb.command);
      assert.match(kb.when, /inlineSuggestionVisible/);
    }
    assert.deepEqual(
      pkg.contributes.keybindings.map((k: { command: string }) => k.command).sort(),
      ['exlsp.acceptLine', 'exlsp.acceptWord'],
    );
    assert.equal(pkg.contributes.views.exlsp[0].type, 'webview');
    assert.equal(pkg.contributes.views.exlsp[0].id, 'exlsp.chatView');
    const props = pkg.contributes.configuration.properties;
    assert.equal(props['exlsp.serverPath'].default, 'exlsp');
    assert.equal(props['exlsp.serverPath'].scope, 'machine');
    assert.equal(props['exlsp.serverArgs'].scope, 'machine');
    assert.ok(props['exlsp.completion.enabled'] && props['exlsp.chat.maxTokens']);
    assert.ok(pkg.activationEvents.includes('onStartupFinished'));
  });

  const python = process.env.EXLSP_PYTHON ?? path.join(REPO_ROOT, '.venv', 'bin', 'python');
  const havePython = existsSync(python) || !!process.env.EXLSP_PYTHON;
  it(
    'configuration is in sync with the server schema (npm run gen-settings)',
    { skip: havePython ? false : `no Python with exlsp at ${python} (set EXLSP_PYTHON)` },
    () => {
      const out = execFileSync('node', [path.join(PACKAGE_ROOT, 'scripts', 'gen-settings.mjs'), '--check'], {
        encoding: 'utf8',
        env: { ...process.env, EXLSP_PYTHON: python },
      });
      assert.match(out, /matches the server schema/);
    },
  );
});
