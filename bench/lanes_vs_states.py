"""Why llama.cpp lanes are sequences of one context rather than saved states (ARCHITECTURE: "your
choice, measured").

Measures, on the default model, what switching an editor between two cached prompts costs:
- seq lanes: each prompt stays in its own sequence; a switch is a routing decision, and a keystroke
  evaluates only the new token;
- saved states: one sequence, the other prompt's KV saved to RAM (llama_state_seq_get_data) and
  restored on switch (llama_state_seq_set_data) before the new token is evaluated.

Run: .venv/bin/python bench/lanes_vs_states.py [--tokens 1000] [--out FILE]
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import json
import statistics
import time
from pathlib import Path

from exlsp.runtime import BackendConfig, load_backend, resolve_model
from exlsp.runtime.bench_typing import machine_info


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    spec = resolve_model(None)
    be = load_backend(spec, BackendConfig(n_lanes=2, n_ctx=args.tokens + 64, n_batch=256))
    lc, ctx = be._lc, be._ctx  # noqa: SLF001 - a benchmark of the backend's own design choice
    text = Path(__file__).resolve().parents[1].joinpath("runtime", "engine.py").read_text()
    prompts = [be.tokenize(text, add_bos=False, special=False)[: args.tokens],
               be.tokenize(text[::-1], add_bos=False, special=False)[: args.tokens]]
    never = lambda: False  # noqa: E731
    for lane, p in enumerate(prompts):
        be.eval(lane, p, 0, never)

    # seq lanes: a keystroke on either prompt = one new token in its own lane
    seq_ms = []
    for r in range(args.rounds):
        lane = r % 2
        t0 = time.perf_counter()
        be.eval(lane, [prompts[lane][-1]], len(prompts[lane]) + r // 2, never)
        seq_ms.append((time.perf_counter() - t0) * 1000)

    # saved states: lane 0 only; switching saves the current prompt and restores the other
    be.truncate(1, 0)
    size = lc.llama_state_seq_get_size(ctx, 0)
    saved = [(ctypes.c_uint8 * size)(), (ctypes.c_uint8 * size)()]
    lc.llama_state_seq_get_data(ctx, saved[0], size, 0)
    be.truncate(0, 0)
    be.eval(0, prompts[1], 0, never)
    lc.llama_state_seq_get_data(ctx, saved[1], size, 0)
    state_ms, save_ms, restore_ms = [], [], []
    current = 1
    for _ in range(args.rounds):
        other = 1 - current
        t0 = time.perf_counter()
        n = lc.llama_state_seq_get_size(ctx, 0)
        lc.llama_state_seq_get_data(ctx, saved[current], n, 0)
        t1 = time.perf_counter()
        lc.llama_memory_seq_rm(lc.llama_get_memory(ctx), 0, -1, -1)
        lc.llama_state_seq_set_data(ctx, saved[other], size, 0)
        t2 = time.perf_counter()
        pos = lc.llama_memory_seq_pos_max(lc.llama_get_memory(ctx), 0) + 1
        be.truncate(0, pos - 1)
        be.eval(0, [prompts[other][-1]], pos - 1, never)  # the keystroke's token
        t3 = time.perf_counter()
        save_ms.append((t1 - t0) * 1000)
        restore_ms.append((t2 - t1) * 1000)
        state_ms.append((t3 - t0) * 1000)
        current = other
    be.close()
    med = lambda xs: round(statistics.median(xs), 2)  # noqa: E731
    result = {
        "benchmark": "lanes_vs_states",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": spec.name,
        "machine": machine_info(),
        "prompt_tokens": args.tokens,
        "state_bytes": size,
        "seq_lanes_switch_and_token_ms_p50": med(seq_ms),
        "saved_states_switch_and_token_ms_p50": med(state_ms),
        "saved_states_save_ms_p50": med(save_ms),
        "saved_states_restore_ms_p50": med(restore_ms),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
