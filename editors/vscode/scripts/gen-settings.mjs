#!/usr/bin/env node
// Generate `contributes.configuration` in package.json from the server's own settings schema
// (`exlsp.lsp.config.settings_schema()`), so the VS Code settings UI offers exactly what the
// server reads. `--check` only compares and exits 1 when package.json is out of date.
//
// The Python that has exlsp installed: $EXLSP_PYTHON, else the repository's .venv, else python3.

import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const pkgPath = join(root, 'package.json');

// The settings only the extension reads. `machine` scope: a workspace's settings cannot choose
// which program VS Code runs.
const CLIENT_PROPERTIES = {
  'exlsp.serverPath': {
    type: 'string',
    default: 'exlsp',
    scope: 'machine',
    markdownDescription:
      'The `exlsp` executable (a name on `PATH` or a full path, `~` allowed), started as `exlsp serve`. ' +
      'Only user settings can set it.',
  },
  'exlsp.serverArgs': {
    type: 'array',
    items: { type: 'string' },
    default: [],
    scope: 'machine',
    markdownDescription:
      'Extra arguments after `serve`, e.g. `["--model", "/models/coder.gguf", "--lanes", "4"]`. ' +
      'Changing it or `#exlsp.serverPath#` restarts the server.',
  },
};

// Descriptions for the server's settings (the schema itself has none); a key missing here still
// gets generated, with a plain description.
const DESCRIPTIONS = {
  'completion.enabled': 'Inline completions (ghost text) from exlsp.',
  'completion.fallback':
    'Also serve `textDocument/completion` (one item in the suggest widget): `auto` only for clients without inline completion (VS Code has it), `on`, `off`.',
  'completion.autoTrigger':
    'Complete as you type. Off: only when asked (the *Trigger Inline Suggestion* command, `Alt+\\`).',
  'completion.maxTokens': 'The most tokens one completion generates.',
  'completion.budgetTokens': 'The prompt budget in exact tokens (context around the cursor and from other open files).',
  'completion.timeBudgetMs': 'Generation stops at the next line end after this many milliseconds.',
  'completion.maxCharsRight':
    'No automatic completion when more than this many non-space characters stand right of the cursor.',
  'completion.maxDocumentBytes': 'Documents larger than this get no completion.',
  'chat.maxTokens': 'The most tokens one chat answer generates.',
  plugins: 'Settings for exlsp plugins, by plugin name: `{"<plugin>": {...}}` (see exlsp\'s docs/plugins.md).',
};

function pythonCommand() {
  if (process.env.EXLSP_PYTHON) return process.env.EXLSP_PYTHON;
  const venv = resolve(root, '..', '..', '.venv', 'bin', 'python');
  return existsSync(venv) ? venv : 'python3';
}

export function readSchema(python = pythonCommand()) {
  const code =
    'import json; from exlsp.lsp.config import settings_schema; print(json.dumps(settings_schema()))';
  return JSON.parse(execFileSync(python, ['-c', code], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
}

function deref(schema, node) {
  if (node && typeof node.$ref === 'string') {
    const name = node.$ref.replace(/^#\/\$defs\//, '');
    return deref(schema, schema.$defs[name]);
  }
  return node;
}

function property(key, node) {
  const out = {};
  if (node.enum) {
    out.type = 'string';
    out.enum = [...node.enum].sort((a, b) => (a === 'auto' ? -1 : b === 'auto' ? 1 : a.localeCompare(b)));
  } else if (node.type) {
    out.type = node.type;
  }
  if (node.type === 'object' && node.additionalProperties) out.additionalProperties = node.additionalProperties;
  if ('default' in node) out.default = node.default;
  if (typeof node.minimum === 'number') out.minimum = node.minimum;
  if (typeof node.maximum === 'number') out.maximum = node.maximum;
  out.markdownDescription = DESCRIPTIONS[key] ?? `exlsp server setting \`${key}\`.`;
  return out;
}

/** The server schema -> VS Code configuration properties (`exlsp.<section>.<key>`). */
export function configurationProperties(schema) {
  const props = { ...CLIENT_PROPERTIES };
  const top = deref(schema, schema);
  for (const [section, raw] of Object.entries(top.properties ?? {})) {
    const node = deref(schema, raw);
    if (node.type === 'object' && node.properties) {
      for (const [key, leaf] of Object.entries(node.properties)) {
        props[`exlsp.${section}.${key}`] = property(`${section}.${key}`, deref(schema, leaf));
      }
    } else {
      props[`exlsp.${section}`] = property(section, node);
    }
  }
  return props;
}

function main() {
  const check = process.argv.includes('--check');
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8'));
  const configuration = { title: 'exlsp', properties: configurationProperties(readSchema()) };
  const current = JSON.stringify(pkg.contributes?.configuration ?? null);
  if (check) {
    if (current !== JSON.stringify(configuration)) {
      console.error('package.json contributes.configuration is out of date: run `npm run gen-settings`');
      process.exit(1);
    }
    console.log('package.json contributes.configuration matches the server schema');
    return;
  }
  pkg.contributes = { ...(pkg.contributes ?? {}), configuration };
  writeFileSync(pkgPath, JSON.stringify(pkg, null, 2) + '\n');
  console.log(`wrote ${Object.keys(configuration.properties).length} settings to package.json`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
