// `exlsp/status` -> the status bar item's text and tooltip. No `vscode` import here.

export interface LaneStatus {
  lane: number;
  group: string;
  tokens: number;
  hits: number;
}

/** The fields of `exlsp/status` the extension shows (the server sends more). */
export interface ExlspStatus {
  ready: boolean;
  loadError?: string | null;
  model?: string;
  backend?: string;
  n_ctx?: number;
  lanes?: LaneStatus[];
  queued?: number;
  cache_hit_rate?: number;
  decode_tok_s?: number;
  prefill_tok_s?: number;
  accepted?: number;
  accepted_by_kind?: Record<string, number>;
  requests?: { completions?: number; suggestions?: number; chats?: number };
  jobs_cancelled?: number;
  jobs_completed?: number;
  uptime_s?: number;
  model_loads?: number;
  lsp?: Record<string, unknown>;
}

export type ClientState = 'starting' | 'running' | 'stopped' | 'missing' | 'failed';

export interface StatusView {
  /** Status bar text, with codicons (`$(loading~spin)` spins). */
  text: string;
  /** Plain-text tooltip, one fact a line. */
  tooltip: string;
}

/** `/models/SmolLM2-135M-Instruct-Q4_1.gguf` -> `SmolLM2-135M-Instruct-Q4_1`, at most `max` chars. */
export function shortModelName(model: string | undefined, max = 28): string {
  if (!model) return 'exlsp';
  let name = model.replace(/[\\/]+$/, '');
  name = name.slice(Math.max(name.lastIndexOf('/'), name.lastIndexOf('\\')) + 1);
  name = name.replace(/\.gguf$/i, '');
  if (name.length > max) name = name.slice(0, max - 1) + '…';
  return name || 'exlsp';
}

export function formatTokensPerSecond(rate: number | undefined): string | undefined {
  if (typeof rate !== 'number' || !Number.isFinite(rate) || rate <= 0) return undefined;
  return rate >= 100 ? `${Math.round(rate)} tok/s` : `${rate.toFixed(1)} tok/s`;
}

export function formatPercent(rate: number | undefined): string | undefined {
  if (typeof rate !== 'number' || !Number.isFinite(rate) || rate < 0) return undefined;
  return `${Math.round(Math.min(rate, 1) * 100)}%`;
}

/** Detail lines for the tooltip and the `exlsp.status` quick pick. */
export function statusDetails(status: ExlspStatus | undefined): string[] {
  if (!status) return ['No status from the server yet.'];
  if (!status.ready) {
    return [status.loadError ? `Model failed to load: ${status.loadError}` : 'Loading the model…'];
  }
  const lines: string[] = [];
  lines.push(`Model: ${status.model ?? 'unknown'}`);
  if (status.backend) lines.push(`Backend: ${status.backend}${status.n_ctx ? ` (context ${status.n_ctx} tokens)` : ''}`);
  if (status.lanes) {
    const groups = new Map<string, number>();
    for (const lane of status.lanes) groups.set(lane.group, (groups.get(lane.group) ?? 0) + 1);
    const parts = [...groups].map(([g, n]) => `${n} ${g}`);
    lines.push(`KV lanes: ${status.lanes.length}${parts.length ? ` (${parts.join(', ')})` : ''}`);
  }
  lines.push(`Cache hit rate: ${formatPercent(status.cache_hit_rate) ?? '—'} of prompt tokens reused`);
  lines.push(`Decode: ${formatTokensPerSecond(status.decode_tok_s) ?? '—'}`);
  if (status.prefill_tok_s) lines.push(`Prefill: ${formatTokensPerSecond(status.prefill_tok_s)}`);
  const req = status.requests ?? {};
  lines.push(`Requests: ${req.completions ?? 0} completions, ${req.chats ?? 0} chats, ${req.suggestions ?? 0} shell suggestions`);
  const byKind = Object.entries(status.accepted_by_kind ?? {})
    .map(([k, n]) => `${n} ${k}`)
    .join(', ');
  lines.push(`Accepted: ${status.accepted ?? 0}${byKind ? ` (${byKind})` : ''}`);
  if (status.queued) lines.push(`Queued jobs: ${status.queued}`);
  return lines;
}

/**
 * The status bar item: model, a spinner while a request is in flight, tokens/s, cache hit rate.
 * `busy` counts the requests this window has in flight.
 */
export function formatStatusBar(status: ExlspStatus | undefined, state: ClientState, busy: number, error?: string): StatusView {
  switch (state) {
    case 'missing':
      return { text: '$(error) exlsp: not found', tooltip: error ?? 'The exlsp executable was not found. Set exlsp.serverPath.' };
    case 'failed':
      return { text: '$(error) exlsp', tooltip: error ?? 'The exlsp server failed.' };
    case 'stopped':
      return { text: '$(circle-slash) exlsp', tooltip: 'The exlsp server is stopped. Click for actions.' };
    case 'starting':
      return { text: '$(loading~spin) exlsp', tooltip: 'Starting exlsp…' };
  }
  if (!status) return { text: '$(loading~spin) exlsp', tooltip: 'Waiting for the server…' };
  if (!status.ready) {
    if (status.loadError) return { text: '$(error) exlsp', tooltip: `Model failed to load: ${status.loadError}` };
    return { text: '$(loading~spin) exlsp: loading', tooltip: 'Loading the model…' };
  }
  const parts = [shortModelName(status.model)];
  const tps = formatTokensPerSecond(status.decode_tok_s);
  if (tps) parts.push(tps);
  const hit = formatPercent(status.cache_hit_rate);
  if (hit && (status.cache_hit_rate ?? 0) > 0) parts.push(`${hit} cached`);
  const icon = busy > 0 ? '$(loading~spin)' : '$(sparkle)';
  const tooltip = [...statusDetails(status), busy > 0 ? `${busy} request(s) in flight` : 'Idle', '', 'Click for actions.'];
  return { text: `${icon} ${parts.join(' · ')}`, tooltip: tooltip.join('\n') };
}
