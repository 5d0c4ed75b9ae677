// VS Code settings (the `exlsp` section) -> what the server reads. No `vscode` import here.
//
// The server takes `{completion: {...}, chat: {...}, plugins: {...}}` as initializationOptions and
// in workspace/didChangeConfiguration (where it also accepts the same object nested under "exlsp").
// The client-only keys (serverPath, serverArgs) never reach it through initializationOptions.

import * as os from 'node:os';
import * as path from 'node:path';

/** The sections of the `exlsp` configuration that belong to the server. */
export const SERVER_SECTIONS = ['completion', 'chat', 'plugins'] as const;
/** Keys that only the extension reads; changing them needs a server restart. */
export const CLIENT_KEYS = ['serverPath', 'serverArgs'] as const;

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A plain JSON copy: drops undefined and functions (VS Code's configuration objects carry both). */
export function toJson(value: unknown): Json | undefined {
  if (value === null) return null;
  if (typeof value === 'boolean' || typeof value === 'string') return value;
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  if (Array.isArray(value)) {
    return value.map(toJson).filter((v): v is Json => v !== undefined);
  }
  if (isObject(value)) {
    const out: JsonObject = {};
    for (const [key, v] of Object.entries(value)) {
      const j = toJson(v);
      if (j !== undefined) out[key] = j;
    }
    return out;
  }
  return undefined;
}

/**
 * The `exlsp` configuration section (as `workspace.getConfiguration('exlsp')` nests it:
 * `exlsp.completion.maxTokens` -> `{completion: {maxTokens}}`) -> initializationOptions.
 * Only the server's sections travel; null values (unset) are left out so the server's own
 * defaults and config file apply.
 */
export function toInitializationOptions(section: unknown): JsonObject {
  const out: JsonObject = {};
  if (!isObject(section)) return out;
  for (const name of SERVER_SECTIONS) {
    const value = toJson(section[name]);
    if (value === undefined || value === null) continue;
    if (typeof value === 'object' && !Array.isArray(value)) {
      const kept: JsonObject = {};
      for (const [k, v] of Object.entries(value)) if (v !== null) kept[k] = v;
      out[name] = kept;
    }
  }
  return out;
}

/**
 * The params vscode-languageclient sends for `synchronize.configurationSection: "exlsp"`:
 * `{settings: {exlsp: <the whole section as JSON>}}` (see SyncConfigurationFeature). Used by the
 * protocol tests to send exactly what the extension sends.
 */
export function didChangeConfigurationParams(section: unknown): { settings: JsonObject } {
  const value = toJson(section);
  return { settings: { exlsp: value === undefined ? {} : value } };
}

export interface ServerCommand {
  command: string;
  args: string[];
}

/** Expand a leading `~` and `${env:NAME}`; the rest is taken as typed (a name is looked up on PATH). */
export function expandPath(p: string, env: NodeJS.ProcessEnv = process.env, home = os.homedir()): string {
  let out = p.trim().replace(/\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, name: string) => env[name] ?? '');
  if (out === '~') out = home;
  else if (out.startsWith('~/') || out.startsWith('~' + path.sep)) out = path.join(home, out.slice(2));
  return out;
}

/**
 * `exlsp.serverPath` (default "exlsp") and `exlsp.serverArgs` (extra arguments after `serve`,
 * e.g. `["--model", "/models/coder.gguf"]`) -> the command line the client starts.
 */
export function serverCommand(serverPath: unknown, serverArgs: unknown, env: NodeJS.ProcessEnv = process.env): ServerCommand {
  const raw = typeof serverPath === 'string' && serverPath.trim() ? serverPath : 'exlsp';
  const extra = Array.isArray(serverArgs) ? serverArgs.filter((a): a is string => typeof a === 'string') : [];
  return { command: expandPath(raw, env), args: ['serve', ...extra] };
}

/** Whether a configuration change needs the server restarted (the command line changed). */
export function needsRestart(affects: (key: string) => boolean): boolean {
  return CLIENT_KEYS.some((k) => affects(`exlsp.${k}`));
}
