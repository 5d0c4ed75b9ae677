"""The engine: one owner thread per loaded model, a priority queue of jobs, KV cache lanes.

The event loop never runs a forward pass. Callers ``await engine.generate(request)`` and iterate
the returned stream; the owner thread runs one job at a time, one token at a time, and between two
tokens (or two prefill chunks) it checks the job's abort flag and whether a more urgent job waits.
A pre-empted job goes back to the queue; when it resumes, lane routing finds its lane again by
longest prefix (its cache is still there unless something evicted it), so pre-emption costs one
token of prefill, not the prompt.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .backends.base import Backend
from .errors import EngineClosed
from .lanes import Lane, LanePool
from .sampling import make_rng, sample
from .textstream import StopStringMatcher
from .tokenizer import Tokenizer
from .types import Completion, Delta, GenerationRequest, Priority

log = logging.getLogger(__name__)

# Left-trimming cuts in blocks of this many tokens, so that the trimmed prompt keeps the same
# start for many keystrokes in a row (a start that moved every keystroke would defeat reuse).
TRIM_BLOCK = 256


@dataclass
class EngineStats:
    jobs_submitted: int = 0
    jobs_completed: int = 0
    jobs_cancelled: int = 0
    jobs_superseded: int = 0
    jobs_failed: int = 0
    preemptions: int = 0
    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefilled_tokens: int = 0
    generated_tokens: int = 0
    decode_seconds: float = 0.0
    prefill_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["cache_hit_rate"] = round(self.reused_tokens / self.prompt_tokens, 4) if self.prompt_tokens else 0.0
        d["decode_tok_s"] = round(self.generated_tokens / self.decode_seconds, 2) if self.decode_seconds else 0.0
        d["prefill_tok_s"] = (
            round(self.prefilled_tokens / self.prefill_seconds, 2) if self.prefill_seconds else 0.0
        )
        return d


@dataclass(eq=False)
class _Job:
    id: int
    request: GenerationRequest
    prompt: list[int]
    max_tokens: int
    trimmed: int
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Delta | Completion]
    submitted: float = field(default_factory=time.perf_counter)
    abort_reason: str | None = None
    generated: list[int] = field(default_factory=list)
    matcher: StopStringMatcher | None = None
    rng: Any = None
    placed: bool = False  # first placement done (reuse statistics are taken then)
    reused: int = 0
    prefilled: int = 0
    preemptions: int = 0
    lane: int = -1
    started: float | None = None
    first_token: float | None = None
    decode_started: float | None = None
    prefill_s: float = 0.0
    decode_s: float = 0.0
    done: bool = False

    aged: bool = False  # waited past the engine's aging time: now competes as SHELL
    queued_at: float = field(default_factory=time.perf_counter)  # since when it waits (again)
    waited_s: float = 0.0  # time spent in the queue before its last start (running does not count)

    @property
    def priority(self) -> int:
        base = int(self.request.priority)
        return min(base, int(Priority.SHELL)) if self.aged else base

    def cancel(self, reason: str = "cancelled") -> None:
        if self.abort_reason is None:
            self.abort_reason = reason

    def emit(self, event: Delta | Completion) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the caller's loop is gone: nobody is listening any more
            self.cancel("cancelled")


class JobStream:
    """Async iterator of ``Delta`` events ending with one ``Completion``. Leaving the iteration
    early (break, task cancelled, ``aclose``) cancels the job at its next token."""

    def __init__(self, job: _Job) -> None:
        self._job = job
        self.final: Completion | None = None

    @property
    def job_id(self) -> int:
        return self._job.id

    def cancel(self, reason: str = "cancelled") -> None:
        self._job.cancel(reason)

    def __aiter__(self) -> JobStream:
        return self

    async def __anext__(self) -> Delta | Completion:
        if self.final is not None:
            raise StopAsyncIteration
        try:
            event = await self._job.queue.get()
        except BaseException:
            self._job.cancel("cancelled")
            raise
        if isinstance(event, Completion):
            self.final = event
        return event

    async def aclose(self) -> None:
        if self.final is None:
            self._job.cancel("cancelled")

    def __del__(self) -> None:
        # A stream dropped unfinished (its consumer raised out of ``async for``) has nobody to
        # read it: stop the job instead of generating into a queue until max_tokens.
        if self.final is None:
            self._job.cancel("cancelled")

    async def __aenter__(self) -> JobStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def result(self) -> Completion:
        """Consume the stream; the final record."""
        async for _ in self:
            pass
        assert self.final is not None
        return self.final


class Engine:
    # A chat or background job that has waited this long competes as a shell job (in submission
    # order), so a stream of shell suggestions cannot starve a chat; inline completions still come
    # first, always (measured: chat TTFT 16.7 s behind 10 shell clients before, bench load).
    aging_s = 2.0

    def __init__(self, backend: Backend, *, lane_groups: Mapping[str, int] | None = None) -> None:
        self.backend = backend
        self.tokenizer = Tokenizer(backend)
        self.lanes = LanePool(backend.n_lanes, lane_groups)
        self.stats = EngineStats()
        self.started_at = time.time()
        self._cv = threading.Condition()
        self._heap: list[tuple[int, int, _Job]] = []
        self._order = itertools.count()
        self._ids = itertools.count(1)
        self._by_key: dict[str, _Job] = {}
        self._running: _Job | None = None
        self._closing = False
        self._failure: str | None = None  # why the owner thread died, if it did
        self._stage = "queue"  # what the owner thread is doing for its job: named in a backend error
        self._clear_requested = False
        self._eog = backend.special_tokens.end_of_generation
        self._thread = threading.Thread(target=self._run, name=f"exlsp-engine-{backend.name}", daemon=True)
        self._thread.start()

    # ---- the async API -------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> JobStream:
        """Queue ``request``; the stream yields its deltas and final record."""
        return JobStream(self._submit(request, asyncio.get_running_loop()))

    async def complete(self, request: GenerationRequest) -> Completion:
        return await (await self.generate(request)).result()

    def close(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._closing = True
            for _, _, job in self._heap:
                job.cancel("cancelled")
            if self._running is not None:
                self._running.cancel("cancelled")
            self._cv.notify_all()
        self._thread.join(timeout)
        self.backend.close()

    def clear_cache(self) -> None:
        """Forget every lane's content. Done by the owner thread before its next job, never
        under a running one."""
        with self._cv:
            self._clear_requested = True
            self._cv.notify_all()

    def status(self) -> dict[str, Any]:
        with self._cv:
            queued = sum(1 for *_, j in self._heap if j.abort_reason is None)
            running = self._running.id if self._running else None
        return {
            "backend": self.backend.name,
            "model": self.backend.model_name,
            "n_ctx": self.backend.n_ctx,
            "queued": queued,
            "running": running,
            "alive": self._thread.is_alive() and self._failure is None,
            "engine_error": self._failure,
            "uptime_s": round(time.time() - self.started_at, 1),
            "lanes": self.lanes.stats(),
            "memory": self.backend.memory_info(),
            **self.stats.as_dict(),
        }

    # ---- submission ------------------------------------------------------------------------------

    def _submit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> _Job:
        prompt = self._tokenize(request)
        prompt, max_tokens, trimmed = self._fit(request, prompt)
        job = _Job(
            id=next(self._ids),
            request=request,
            prompt=prompt,
            max_tokens=max_tokens,
            trimmed=trimmed,
            loop=loop,
            queue=asyncio.Queue(),
        )
        with self._cv:
            if self._closing:
                raise EngineClosed(self._failure or "the engine is shutting down")
            self.stats.jobs_submitted += 1
            key = request.supersede_key
            if key is not None:
                older = self._by_key.get(key)
                if older is not None and not older.done:
                    older.cancel("superseded")
                self._by_key[key] = job
            heapq.heappush(self._heap, (job.priority, next(self._order), job))
            self._cv.notify_all()
        return job

    def _tokenize(self, request: GenerationRequest) -> list[int]:
        if isinstance(request.prompt, str):
            return self.backend.tokenize(request.prompt, add_bos=request.add_bos, special=True)
        tokens = list(request.prompt)
        special = self.backend.special_tokens
        bos = special.bos
        if request.add_bos and special.add_bos and bos is not None and (not tokens or tokens[0] != bos):
            tokens.insert(0, bos)
        return tokens

    def _fit(self, request: GenerationRequest, prompt: list[int]) -> tuple[list[int], int, int]:
        """Make prompt + max_tokens fit a lane: trim the prompt from the left (after ``n_keep``
        tokens, BOS included), in blocks; never fail."""
        n_ctx = self.backend.n_ctx
        max_tokens = max(1, min(request.max_tokens, n_ctx // 2))
        overflow = len(prompt) + max_tokens - n_ctx
        if overflow <= 0:
            return prompt, max_tokens, 0
        bos = self.backend.special_tokens.bos
        keep = request.n_keep + (1 if bos is not None and prompt and prompt[0] == bos else 0)
        keep = min(keep, len(prompt) - 1)
        cut = min(math.ceil(overflow / TRIM_BLOCK) * TRIM_BLOCK, len(prompt) - keep - 1)
        cut = max(cut, overflow)
        return prompt[:keep] + prompt[keep + cut :], max_tokens, cut

    # ---- the owner thread --------------------------------------------------------------------------

    def _next_job(self) -> _Job | None:
        with self._cv:
            while True:
                if self._clear_requested:
                    self._clear_requested = False
                    self.lanes.clear()
                if self._heap or self._closing:
                    break
                self._cv.wait()
            if self._closing and not self._heap:
                return None
            self._age()
            _, _, job = heapq.heappop(self._heap)
            job.waited_s += time.perf_counter() - job.queued_at
            self._running = job
            return job

    def _age(self) -> None:
        """Promote jobs below SHELL that have waited ``aging_s`` in the queue, all their waits
        together (time spent running does not count) (lock held)."""
        now = time.perf_counter()
        promoted = False
        for _, _, job in self._heap:
            waited = job.waited_s + (now - job.queued_at)
            if not job.aged and job.request.priority > Priority.SHELL and waited >= self.aging_s:
                job.aged = promoted = True
        if promoted:
            self._heap = [(job.priority, order, job) for _, order, job in self._heap]
            heapq.heapify(self._heap)

    def _more_urgent_waiting(self, job: _Job) -> bool:
        # Read without the lock: a stale answer only delays pre-emption by one token.
        return any(p < job.priority and j.abort_reason is None for p, _, j in self._heap)

    def _run(self) -> None:
        """The owner thread. Faults (docs/faults.md, "In-process faults"): a backend call that
        raises ends *that* job with ``stop_reason="error"`` and a message naming the stage (trim,
        prefill, decode); the lane it used is reset (book emptied, cache truncated), so its stale
        cache is never reused, and the next job runs as usual - one attempt per job, never a retry
        loop. Should this thread itself die, every job waiting for it ends with "error" and the
        engine refuses new ones: nobody awaits a dead thread."""
        try:
            while (job := self._next_job()) is not None:
                self._step(job)
        except BaseException as exc:  # noqa: BLE001 - the thread is dying: nobody may wait for it
            log.critical("the engine's owner thread died", exc_info=True)
            self._abandon(f"the engine stopped: {type(exc).__name__}: {exc}")
        else:
            self._abandon(None)

    def _step(self, job: _Job) -> None:
        """Advance ``job`` once: until it finishes, fails, or a more urgent job pre-empts it."""
        self._stage = "queue"
        try:
            finished = self._advance(job)
        except Exception as exc:  # a backend failure ends this job, never the engine
            log.exception("job %d failed during %s", job.id, self._stage)
            self._reset_lane(job.lane)
            error = f"{self.backend.name} backend failed during {self._stage}: {type(exc).__name__}: {exc}"
            self._finish(job, "error", error=error)
            finished = True
        with self._cv:
            self._running = None
            if not finished and not self._closing:
                job.preemptions += 1
                self.stats.preemptions += 1
                job.queued_at = time.perf_counter()
                heapq.heappush(self._heap, (job.priority, next(self._order), job))
            elif not finished:
                self._finish(job, "cancelled")

    def _abandon(self, failure: str | None) -> None:
        """End every job still waiting: "cancelled" after ``close``, "error" when the owner
        thread died (``failure``); from then on ``generate`` raises ``EngineClosed``."""
        with self._cv:
            self._closing = True
            if failure is not None:
                self._failure = failure
            left = [job for *_, job in self._heap]
            if self._running is not None:
                left.append(self._running)
            self._heap.clear()
            for job in left:
                if not job.done:
                    self._finish(job, "error" if failure else "cancelled", error=failure)
            self._running = None

    def _advance(self, job: _Job) -> bool:
        """Run ``job`` until it finishes (True) or a more urgent job waits (False)."""
        if job.abort_reason is not None:
            self._finish(job, job.abort_reason)
            return True
        now = time.perf_counter()
        if job.started is None:
            job.started = now
            job.matcher = StopStringMatcher(job.request.stop)
            job.rng = make_rng(job.request.sampling)
        lane = self._place(job)
        if lane is None:  # stopped during prefill
            if job.abort_reason is not None:
                self._finish(job, job.abort_reason)
                return True
            return False
        return self._decode(job, lane)

    def _should_stop_prefill(self, job: _Job, inside_chunk: bool = False) -> bool:
        """Between chunks: stop for a cancel, a supersede or a more urgent job. Inside a chunk
        only for the engine closing or a more urgent job: a cancelled or superseded job finishes
        its chunk, which stays in the lane - when a typist outpaces a cold prefill, every keystroke
        cancels the last request, and dropping the chunk in progress each time would never let the
        prefill advance (measured: 11 keystrokes superseded with 0 tokens kept, bench load)."""
        if inside_chunk:
            return self._closing or self._more_urgent_waiting(job)
        return job.abort_reason is not None or self._more_urgent_waiting(job)

    def _place(self, job: _Job) -> Lane | None:
        """Route the job's tokens to a lane and prefill what the lane lacks."""
        target = job.prompt + job.generated
        lane, reuse = self.lanes.route(job.request.lane_group, target, reuse=job.request.reuse_cache)
        reuse = min(reuse, len(target) - 1)  # at least one token, to get fresh logits
        job.lane = lane.index  # before the backend is touched: a failure from here resets this lane
        self.lanes.touch(lane)
        self._stage = "trim"
        self.backend.truncate(lane.index, reuse)
        del lane.tokens[reuse:]
        if not job.placed:
            job.placed, job.reused = True, reuse
            if reuse:
                lane.hits += 1
        todo = target[reuse:]
        self._stage = "prefill"
        t0 = time.perf_counter()
        n = self.backend.eval(lane.index, todo, reuse, lambda inside=False: self._should_stop_prefill(job, inside))
        dt = time.perf_counter() - t0
        lane.tokens.extend(todo[:n])
        job.prefilled += n
        job.prefill_s += dt
        self.stats.prefilled_tokens += n
        self.stats.prefill_seconds += dt
        return lane if n == len(todo) else None

    def _decode(self, job: _Job, lane: Lane) -> bool:
        backend, req, matcher = self.backend, job.request, job.matcher
        assert matcher is not None
        budget_s = req.t_max_predict_ms / 1000 if req.t_max_predict_ms else None
        stop_tokens = set(req.stop_tokens) | (self._eog if req.stop_at_eos else set())
        self._stage = "decode"
        while True:
            t0 = time.perf_counter()
            token = sample(backend.logits(lane.index), req.sampling, job.rng)
            now = time.perf_counter()
            if job.first_token is None:
                job.first_token = job.decode_started = now
            job.generated.append(token)
            if token in stop_tokens:
                job.decode_s += now - t0
                self._finish(job, "eos" if token in self._eog else "stop")
                return True
            released_from = len(matcher.emitted_text)
            text = matcher.feed(backend.token_bytes(token))
            if req.stop_check is not None and not matcher.stopped:
                cut = req.stop_check(matcher.text)
                if cut is not None:
                    matcher.cut(cut)
                    text = text[: max(0, cut - released_from)]
            if text:
                job.emit(Delta(text=text, tokens=(token,)))
            reason = None
            if matcher.stopped:
                reason = "stop"
            elif len(job.generated) >= job.max_tokens:
                reason = "length"
            elif budget_s is not None and now - job.decode_started >= budget_s and "\n" in text:
                reason = "time"
            elif job.abort_reason is not None:
                reason = job.abort_reason
            if reason is not None:
                job.decode_s += time.perf_counter() - t0
                self._finish(job, reason)
                return True
            if self._more_urgent_waiting(job):
                job.decode_s += time.perf_counter() - t0
                return False
            n = backend.eval(lane.index, [token], len(lane.tokens), lambda: False)
            lane.tokens.extend([token][:n])
            self.lanes.touch(lane)
            job.decode_s += time.perf_counter() - t0

    def _reset_lane(self, index: int) -> None:
        """Forget a lane after a failure. The book is emptied first: even if the backend cannot
        truncate now, the next job on this lane reuses nothing and truncates it to 0 first."""
        if index < 0:
            return
        lane = self.lanes.lanes[index]
        lane.tokens.clear()
        try:
            self.backend.truncate(index, 0)
        except Exception:
            log.exception("could not reset lane %d (it is marked empty)", index)

    def _finish(self, job: _Job, reason: str, *, error: str | None = None) -> None:
        """Send the job's final record, exactly once. Never raises: a caller waiting for this
        record would otherwise wait forever."""
        if job.done:
            return
        job.done = True
        try:
            record = self._record(job, reason, error)
        except Exception as exc:
            log.exception("could not build the final record of job %d", job.id)
            record = Completion(text="", tokens=[], stop_reason="error", lane=job.lane,
                                error=f"the engine failed to end the job: {type(exc).__name__}: {exc}")
        try:
            self._count(job, record.stop_reason)
        except Exception:
            log.exception("could not count job %d", job.id)
        key = job.request.supersede_key
        with self._cv:
            if self._running is job:  # a client holding the final record sees no running job
                self._running = None
            if key is not None and self._by_key.get(key) is job:
                del self._by_key[key]
        job.emit(record)

    def _record(self, job: _Job, reason: str, error: str | None) -> Completion:
        matcher = job.matcher
        if matcher is not None and reason not in ("cancelled", "superseded", "error"):
            tail = matcher.flush()
            if tail:
                job.emit(Delta(text=tail, tokens=()))
        text = matcher.emitted_text if matcher else ""
        end = time.perf_counter()
        generated = len(job.generated)
        if reason in ("eos", "stop") and job.generated and job.generated[-1] in (
            set(job.request.stop_tokens) | self._eog
        ):
            generated -= 1  # the stop token itself is not output
        return Completion(
            text=text,
            tokens=list(job.generated[:generated]),
            stop_reason=reason,
            prompt_tokens=len(job.prompt),
            reused_tokens=job.reused,
            prefilled_tokens=job.prefilled,
            generated_tokens=generated,
            trimmed_tokens=job.trimmed,
            lane=job.lane,
            preemptions=job.preemptions,
            queue_ms=((job.started or end) - job.submitted) * 1000,
            prefill_ms=job.prefill_s * 1000,
            ttft_ms=((job.first_token or end) - job.submitted) * 1000,
            decode_ms=job.decode_s * 1000,
            total_ms=(end - job.submitted) * 1000,
            error=error,
        )

    def _count(self, job: _Job, reason: str) -> None:
        s = self.stats
        if reason == "cancelled":
            s.jobs_cancelled += 1
        elif reason == "superseded":
            s.jobs_superseded += 1
        elif reason == "error":
            s.jobs_failed += 1
        else:
            s.jobs_completed += 1
        if job.placed:
            s.prompt_tokens += len(job.prompt)
            s.reused_tokens += job.reused
        s.generated_tokens += len(job.generated)
        s.decode_seconds += job.decode_s
