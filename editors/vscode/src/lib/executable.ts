// Is the configured server executable there? A spawn test (`<serverPath> --version`) before the
// language client starts, so a missing executable gets one clear message instead of the client's
// restart loop. No `vscode` import here.

import { spawn } from 'node:child_process';

export type ExecutableCheck =
  | { ok: true; version?: string }
  | { ok: false; reason: 'missing' | 'not-executable' | 'failed'; detail: string };

export interface CheckOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs?: number;
}

export function checkExecutable(command: string, opts: CheckOptions = {}): Promise<ExecutableCheck> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (result: ExecutableCheck) => {
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        resolve(result);
      }
    };
    let child;
    try {
      child = spawn(command, ['--version'], {
        env: opts.env ?? process.env,
        cwd: opts.cwd,
        stdio: ['ignore', 'pipe', 'pipe'],
        windowsHide: true,
      });
    } catch (err) {
      resolve(classifySpawnError(err));
      return;
    }
    const timer = setTimeout(() => {
      // It started and is still busy: it exists; the real start will tell the rest.
      child.kill();
      finish({ ok: true });
    }, opts.timeoutMs ?? 20000);
    let out = '';
    let errText = '';
    child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr?.on('data', (b: Buffer) => (errText += b.toString()));
    child.on('error', (err) => finish(classifySpawnError(err)));
    child.on('close', (code, signal) => {
      if (code === 0) {
        finish({ ok: true, version: (out || errText).trim().split('\n')[0] || undefined });
      } else {
        const tail = (errText || out).trim().split('\n').slice(-3).join('\n');
        finish({ ok: false, reason: 'failed', detail: tail || `exited with ${code ?? signal}` });
      }
    });
  });
}

export function classifySpawnError(err: unknown): ExecutableCheck {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const message = err instanceof Error ? err.message : String(err);
  if (code === 'ENOENT') return { ok: false, reason: 'missing', detail: message };
  if (code === 'EACCES' || code === 'EPERM' || code === 'ENOEXEC') return { ok: false, reason: 'not-executable', detail: message };
  return { ok: false, reason: 'failed', detail: message };
}

/** The error message shown to the user (with an "Open settings" action beside it). */
export function executableErrorMessage(check: ExecutableCheck, command: string): string | undefined {
  if (check.ok) return undefined;
  switch (check.reason) {
    case 'missing':
      return (
        `exlsp: the server executable "${command}" was not found. Install exlsp ` +
        `(pip install exlsp, or the project's .venv) and set "exlsp.serverPath" to the full path of the exlsp executable.`
      );
    case 'not-executable':
      return `exlsp: "${command}" is not executable (${check.detail}). Check "exlsp.serverPath".`;
    case 'failed':
      return `exlsp: "${command} --version" failed: ${check.detail}. Check "exlsp.serverPath" and the exlsp installation.`;
  }
}
