// Work-done progress of one `exlsp/chat` request -> the streamed text. No `vscode` import here.
//
// The server sends `begin`, then one `report` per delta with the delta in `message`, then `end`
// with message "done" or "cancelled".

export interface ProgressValue {
  kind?: string;
  message?: string;
  title?: string;
  percentage?: number;
  cancellable?: boolean;
}

export type StreamState = 'waiting' | 'streaming' | 'done' | 'cancelled';

export class DeltaAccumulator {
  private parts: string[] = [];
  private joined = '';
  private dirty = false;
  state: StreamState = 'waiting';
  deltas = 0;

  /** Apply one progress value; returns the delta it carried (if any). */
  apply(value: ProgressValue | undefined | null): string | undefined {
    if (!value || typeof value !== 'object') return undefined;
    switch (value.kind) {
      case 'begin':
        if (this.state === 'waiting') this.state = 'streaming';
        return undefined;
      case 'report': {
        if (this.state === 'done' || this.state === 'cancelled') return undefined; // late: ignore
        this.state = 'streaming';
        const delta = typeof value.message === 'string' ? value.message : undefined;
        if (delta) {
          this.parts.push(delta);
          this.dirty = true;
          this.deltas += 1;
        }
        return delta || undefined;
      }
      case 'end':
        this.state = value.message === 'cancelled' ? 'cancelled' : 'done';
        return undefined;
      default:
        return undefined;
    }
  }

  get text(): string {
    if (this.dirty) {
      this.joined = this.parts.join('');
      this.parts = [this.joined];
      this.dirty = false;
    }
    return this.joined;
  }

  get finished(): boolean {
    return this.state === 'done' || this.state === 'cancelled';
  }
}
