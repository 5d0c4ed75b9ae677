// Shared by the unit and protocol tests.
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

/** editors/vscode (tests run from out/test/...). */
export const PACKAGE_ROOT = path.resolve(__dirname, '..', '..');
export const REPO_ROOT = path.resolve(PACKAGE_ROOT, '..', '..');

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function packageJson(): any {
  return JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8'));
}

/**
 * The `exlsp` section as `workspace.getConfiguration().get('exlsp')` returns it with every setting
 * at its default: the dotted keys of package.json nested into objects.
 */
export function defaultSection(): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const props = packageJson().contributes.configuration.properties as Record<string, { default?: unknown }>;
  for (const [key, prop] of Object.entries(props)) {
    const parts = key.split('.').slice(1);
    let node = out;
    for (const p of parts.slice(0, -1)) node = (node[p] ??= {}) as Record<string, unknown>;
    node[parts[parts.length - 1]] = structuredClone(prop.default);
  }
  return out;
}
