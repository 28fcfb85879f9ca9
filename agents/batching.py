"""Batching across sessions that step on their own threads (an OpenEnv server runs each session's `step` on a
thread of its own): `BatchedPolicy` gathers the partner's requests of all sessions into one `act_batch` call, and
`BatchedReward` the reward function's contexts into one `batch` call, so an LLM partner and a reward model see
batches, not single requests.

One worker thread per batcher makes the calls: it takes the first waiting request, waits up to `max_wait_s` for
more (or until `max_batch` are waiting), makes one call, and hands each caller its own result (or the call's
exception). Results are what the wrapped object gives for the same inputs and keys: a seeded LLM policy samples
each request from its key, whatever shares the batch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from sotopia_env.env import score_contexts
from sotopia_env.policy import Policy, act_batch


class Batcher:
    """Calls `fn(items) -> results` (one result per item) for items submitted from many threads, in batches."""

    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], max_batch: int = 64, max_wait_s: float = 0.005):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.fn, self.max_batch, self.max_wait_s = fn, max_batch, max_wait_s
        self.calls = 0  # batched calls made, to show batching
        self._queue: queue.Queue[tuple[list[Any], Future]] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._worker.start()

    def __call__(self, items: Sequence[Any]) -> list[Any]:
        """The results of `items`, computed in a batch with other threads' items."""
        if not items:
            return []
        done: Future = Future()
        self._queue.put((list(items), done))
        return done.result()

    def _run(self) -> None:
        while True:
            waiting = [self._queue.get()]
            deadline = time.monotonic() + self.max_wait_s
            while sum(len(items) for items, _ in waiting) < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    waiting.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            flat = [x for items, _ in waiting for x in items]
            try:
                results = list(self.fn(flat))
                if len(results) != len(flat):
                    raise ValueError(f"{self.fn!r} returned {len(results)} results for {len(flat)} items")
            except Exception as exc:  # every caller of the batch gets the error
                for _, done in waiting:
                    done.set_exception(exc)
                continue
            finally:
                self.calls += 1
            for items, done in waiting:
                done.set_result(results[: len(items)])
                results = results[len(items) :]


class BatchedPolicy:
    """A `Policy` whose `act_batch` calls from many threads reach `policy` as one `act_batch` call."""

    def __init__(self, policy: Policy, max_batch: int = 64, max_wait_s: float = 0.005) -> None:
        self.policy = policy
        self.model_name = getattr(policy, "model_name", type(policy).__name__)
        self.batcher = Batcher(self._act, max_batch, max_wait_s)

    def _act(self, requests: list[tuple[dict[str, Any], Any]]) -> list[Any]:
        keys = [key for _, key in requests]
        return act_batch(self.policy, [obs for obs, _ in requests], None if None in keys else keys)

    def act(self, observation: dict[str, Any]) -> Any:
        return self.batcher([(observation, None)])[0]

    def act_batch(self, observations: Sequence[dict[str, Any]], keys: Sequence[Any] | None = None) -> list[Any]:
        return self.batcher(list(zip(observations, keys if keys is not None else [None] * len(observations))))


class BatchedReward:
    """An env reward function (`sotopia_env.UtteranceReward`) whose calls from many threads reach `reward_fn` as
    one batched call (its `batch` form where it has one)."""

    def __init__(self, reward_fn: Any, max_batch: int = 64, max_wait_s: float = 0.005) -> None:
        self.reward_fn = reward_fn
        self.batcher = Batcher(lambda contexts: score_contexts(reward_fn, contexts), max_batch, max_wait_s)

    def __call__(self, context: Any) -> float:
        return self.batcher([context])[0]

    def batch(self, contexts: Sequence[Any]) -> list[float]:
        return self.batcher(list(contexts))
