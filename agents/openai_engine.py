"""`OpenAIEngine`: any OpenAI-compatible chat server (OpenAI, `vllm serve`, others) via the `openai` client.

Requests run concurrently (at most `max_concurrency` in flight per server) with a per-request timeout. Rate
limits (429), server errors (5xx), timeouts and refused connections are retried with exponential backoff and
jitter, up to `max_retries` times or `retry_budget_s` seconds per request, so a server that restarts
mid-run costs time, not work. When they run out, `ServerUnavailable` says in one line which URL, how
many attempts over how long, and the last error. Other errors (400, 401, 404) are raised at once:
retrying cannot fix them.
The API key comes from the environment (`api_key_env`), never from a file we write.

Several base URLs of one model (`base_url="URL1,URL2"`, or a list) make a fleet (`agents.fleet`): each
attempt goes to the least-loaded server in service, a retry to another server than the one that just failed;
one that cannot be reached, or answers server errors repeatedly, is taken out for a cool-down, and the request
is retried at once on another, with the same prompt and seed. A request that times out on a server that still
answers its model list is retried elsewhere, and the slow server stays in service. `load_adapter` loads the new
version into every server in service before it returns, and a server coming back gets the current version
before it serves again, so no sample comes from an old adapter; `unload_adapter` unloads an old version from
every server that holds it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from .engine import NEUTRAL_SAMPLING, Messages, Sample, SamplingParams, check_conversations, request_seeds
from .fleet import Connections, Endpoint, Fleet, split_urls

log = logging.getLogger(__name__)
MAX_RETRIES_ENV, RETRY_BUDGET_ENV = "SOTOPIA_OPENAI_MAX_RETRIES", "SOTOPIA_OPENAI_RETRY_BUDGET_S"
# After a request timed out, how long its server has to answer its model list to count as slow rather than down
# (at most the request timeout).
PROBE_TIMEOUT_S = 10.0
T = TypeVar("T")


class ServerUnavailable(ConnectionError):
    """An OpenAI-compatible server did not answer usefully after every retry. A `ConnectionError`, so the
    CLI reports it as one line (`error: ...`) instead of a traceback."""


def describe(exc: BaseException) -> str:
    """`Type: message`, plus the deepest operating-system error behind it: the openai client's "Connection
    error." alone does not say that the connection was refused or timed out."""
    text = f"{type(exc).__name__}: {exc}"
    chain, link = [], exc.__cause__ or exc.__context__
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    root = next((e for e in reversed(chain) if isinstance(e, OSError)), None)
    if root is not None and str(root) not in text:
        text += f" ({type(root).__name__}: {root})"
    return " ".join(text.split())  # one line, whatever the server put in its message


class OpenAIEngine:
    def __init__(
        self,
        model: str,
        base_url: str | Sequence[str] | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 16,
        timeout_s: float = 120.0,
        max_retries: int | None = None,
        retry_budget_s: float | None = None,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 30.0,
        return_token_ids: bool = False,
        tokenizer: Any = None,
        max_prompt_tokens: int = 3072,
        context_length: int | None = None,
        server_cooldown_s: float = 10.0,
        server_max_errors: int = 3,
        server_sampling_defaults: bool = False,
    ) -> None:
        """return_token_ids: ask a vLLM server for the sampled token ids (a vLLM extension; other servers
        may reject the field). Without it `Sample.token_ids` is empty.

        tokenizer: the served model's tokenizer (loaded, or a local path / "embedded"). With it, each
        conversation is rendered here by `agents.render`, fitted to `max_prompt_tokens` like every other
        engine does (the oldest dialogue lines go first), and sent as token ids to the completions endpoint
        of a vLLM server; samples carry exactly those prompt ids and the sampled ids, so a trainer can train
        on what was sampled. Without it, chat messages go to the chat endpoint whole (a remote model's
        tokenizer is not known here).

        context_length: the served model's context. A rendered prompt is also kept within the context less
        the request's max_new_tokens (a vLLM server would otherwise end the answer where the context ends,
        silently). None: asked of the server once (vLLM's /v1/models reports `max_model_len`); a server that
        does not say leaves max_prompt_tokens the only limit.

        max_retries (default 8) and retry_budget_s (default 300) fall back to $SOTOPIA_OPENAI_MAX_RETRIES
        and $SOTOPIA_OPENAI_RETRY_BUDGET_S: the command line builds engines from policy specs, which have
        no room for them.

        base_url: one server, or several of the same model ("URL1,URL2" or a list): a fleet, routed by
        `agents.fleet`; `max_concurrency` then applies per server, and a server that cannot be reached, or
        answers `server_max_errors` server errors (5xx) in a row, is taken out for `server_cooldown_s` before it
        is tried again. A request that runs past `timeout_s` is abandoned (closing its connection makes a vLLM
        server abort it) and retried; its server is taken out only if it does not answer its model list within
        PROBE_TIMEOUT_S either: slow is not down.

        server_sampling_defaults: False (default) sends every sampling field but temperature and top-p at its
        neutral value (`NEUTRAL_SAMPLING`; top_k, min_p and repetition_penalty only to vLLM servers, which take
        them), so the server samples from exactly softmax(logits / T) with top-p, what a trainer's log-probs
        assume. True leaves them out, and a vLLM server fills them from the model's generation_config (its
        recommended sampling, for collecting or evaluating, never for training)."""
        from openai import AsyncOpenAI

        self.model_name = model  # recorded in episodes: the base, then "base+adapter path" like the other engines
        self.base_model = model
        self.served_name = model  # what requests name: the base, or the adapter loaded into the server
        urls: list[str | None] = list(split_urls(base_url)) if base_url else [None]
        self.base_url = ",".join(urls) if base_url else None  # type: ignore[arg-type]
        self.fleet = Fleet(urls, cooldown_s=server_cooldown_s, max_errors=server_max_errors)
        self.timeout_s = timeout_s
        # Local servers usually need no key; the client insists on one, so give it a placeholder.
        api_key = os.environ.get(api_key_env) or "EMPTY"
        self._client_args = {"api_key": api_key, "timeout": timeout_s, "max_retries": 0}
        self._client_cls = AsyncOpenAI
        self.max_concurrency = max_concurrency
        self.max_retries = int(os.environ.get(MAX_RETRIES_ENV, 8)) if max_retries is None else max_retries
        self.retry_budget_s = float(os.environ.get(RETRY_BUDGET_ENV, 300)) if retry_budget_s is None else retry_budget_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.return_token_ids = return_token_ids
        self.server_sampling_defaults = server_sampling_defaults
        self.retries = 0  # how many retries this engine has made (for logs and tests)
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            from .models import resolve_model

            tokenizer = AutoTokenizer.from_pretrained(resolve_model(tokenizer))
        self.tokenizer = tokenizer
        self.max_prompt_tokens = max_prompt_tokens
        self.context_length = context_length
        self._context_asked = context_length is not None
        if tokenizer is not None:
            self.return_token_ids = True  # the trainer's ids come from the server's answer
        self.adapter_version = 0
        self._adapter_tag = uuid.uuid4().hex[:8]
        self.adapters: dict[str, str] = {}  # every adapter version this engine loaded: its name -> its path

    # --- retries -------------------------------------------------------------------------------

    @staticmethod
    def retryable(exc: BaseException) -> bool:
        import openai

        if isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError)):
            return True
        if isinstance(exc, openai.APIStatusError):
            return exc.status_code == 429 or exc.status_code >= 500
        return False

    def _lost_adapter(self, exc: BaseException) -> bool:
        """A 404 naming our adapter: the server was restarted without us seeing it fail (`_send` loads the
        adapter into it again before the retry)."""
        import openai

        return isinstance(exc, openai.NotFoundError) and self.served_name in self.adapters

    async def _with_retries(self, call: Callable[[list[Endpoint]], Awaitable[T]], what: str) -> T:
        """The one retry loop, for one server or a fleet: `call(tried)` makes one attempt (`_send` picks its
        server, another than the one in `tried` that failed last, and adds the server when the attempt fails)."""
        started = time.monotonic()
        tried: list[Endpoint] = []
        for attempt in range(self.max_retries + 1):
            try:
                return await call(tried)
            except Exception as exc:
                elapsed = time.monotonic() - started
                lost_adapter = self._lost_adapter(exc)
                if not (self.retryable(exc) or lost_adapter):
                    raise
                if attempt == self.max_retries or elapsed > self.retry_budget_s:
                    raise ServerUnavailable(
                        f"{self.base_url or 'the OpenAI API'} did not answer {what} for model {self.served_name!r}: "
                        f"{attempt + 1} attempts over {elapsed:.1f}s (max_retries={self.max_retries}, "
                        f"retry_budget_s={self.retry_budget_s:g}), last error {describe(exc)}; check that the "
                        f"server is running at that URL, or wait longer with {MAX_RETRIES_ENV} / {RETRY_BUDGET_ENV}"
                    ) from exc
                delay = min(self.backoff_max_s, self.backoff_base_s * 2**attempt) * random.uniform(0.5, 1.0)
                # Another server in service has not failed this request, or the adapter is reloaded: no need to wait.
                if lost_adapter or (tried and self.fleet.untried_in_service(tried)):
                    delay = 0.0
                self.retries += 1
                log.warning("%s failed (%s: %s); retry %d in %.1fs", what, type(exc).__name__, exc, attempt + 1, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _send(
        self, connections: Connections, call: Callable[[Any], Awaitable[T]], model: str, tried: list[Endpoint]
    ) -> T:
        """One attempt of a request naming `model` on the least-loaded server in service that is not the one the
        request failed on last (`tried`), which first gets that adapter if it may lack it. A failed attempt adds
        its server to `tried` and tells the fleet what it says of the server (`_failed`); a 404 for our adapter
        only says the server must be given it again."""
        import openai

        endpoint = self.fleet.take(tried)
        client = connections.client(endpoint)
        answered = False
        try:
            if model in self.adapters and endpoint.adapter != model:
                async with connections.lock(endpoint):  # one load per server, however many requests wait for it
                    if endpoint.adapter != model:
                        await self._give_adapter(client, endpoint, model, self.adapters[model])
            result = await call(client)
            answered = True
            return result
        except Exception as exc:
            if isinstance(exc, openai.NotFoundError) and model in self.adapters:
                endpoint.adapter = None  # it lost our adapter (a restart), not its health: load it again
            else:
                tried.append(endpoint)
                await self._failed(client, endpoint, exc)
            raise
        finally:
            self.fleet.release(endpoint, answered)

    async def _failed(self, client: Any, endpoint: Endpoint, exc: BaseException) -> None:
        """What a failed attempt says of its server. Refused or reset: out for the cool-down. A server error
        (5xx): counted, `server_max_errors` in a row take it out. Timed out: out only if it does not answer its
        model list either; a slow server that answers stays in service, and only the request was abandoned (its
        connection closed, which makes a vLLM server abort it). Other errors say nothing of the server."""
        import openai

        if isinstance(exc, openai.APITimeoutError):
            endpoint.failures += 1
            if await self._answers(client):
                log.warning(
                    "%s is slow: a request timed out there, but it answers, so it stays in service", endpoint.url
                )
            else:
                self.fleet.take_out(endpoint, f"{describe(exc)}, and its model list did not answer either")
        elif isinstance(exc, openai.APIConnectionError):
            endpoint.failures += 1
            self.fleet.take_out(endpoint, describe(exc))
        elif isinstance(exc, openai.APIStatusError) and exc.status_code >= 500:
            endpoint.failures += 1
            self.fleet.server_error(endpoint, describe(exc))

    async def _answers(self, client: Any) -> bool:
        """Whether the server answers its model list within PROBE_TIMEOUT_S (at most the request timeout)."""
        import openai

        try:
            await client.models.list(timeout=min(self.timeout_s, PROBE_TIMEOUT_S))
        except openai.APIConnectionError:
            return False
        except openai.APIStatusError as exc:
            return exc.status_code < 500  # it answered: a server without the list says 404
        return True

    async def _give_adapter(self, client: Any, endpoint: Endpoint, name: str, path: str) -> None:
        """Make sure the server holds adapter `name`: loaded from `path` unless the server already lists it. The
        versions of this engine it lists and the engine has unloaded since (it was out then) are unloaded."""
        import openai

        listed = {card.id for card in (await client.models.list()).data}
        if name not in listed:
            try:
                await client.post("/load_lora_adapter", body={"lora_name": name, "lora_path": path}, cast_to=str)
            except openai.APIStatusError as exc:
                if self.retryable(exc):
                    raise
                raise RuntimeError(
                    f"the server at {endpoint.url} refused adapter {path} ({exc.status_code}: "
                    f"{describe(exc)[:300]}); start vllm serve with --enable-lora and "
                    "VLLM_ALLOW_RUNTIME_LORA_UPDATING=true, and put the adapter where every server can read it"
                ) from exc
            log.info("loaded adapter %s (%s) into %s", name, path, endpoint.url)
        ours = f"adapter-{self._adapter_tag}-v"
        for stale in sorted(n for n in listed if n.startswith(ours) and n not in self.adapters and n != name):
            await self._unload(client, endpoint, stale)
        endpoint.adapter = name

    async def _unload(self, client: Any, endpoint: Endpoint, name: str) -> None:
        import openai

        try:
            await client.post("/unload_lora_adapter", body={"lora_name": name}, cast_to=str)
        except openai.NotFoundError:  # it does not hold it (restarted since it was loaded)
            return
        log.info("unloaded adapter %s from %s", name, endpoint.url)

    def _connections(self) -> Connections:
        return Connections(lambda url: self._client_cls(base_url=url, **self._client_args))

    # --- generation ------------------------------------------------------------------------------

    async def agenerate(
        self, conversations: list[Messages], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Sample]]:
        check_conversations(conversations)
        # Seeded only when the caller asks (a run seed or explicit seeds): some servers reject or bill `seed`.
        request = request_seeds(conversations, params, seeds) if seeds is not None or params.seed is not None else None
        connections = self._connections()
        limit = asyncio.Semaphore(self.max_concurrency * len(self.fleet.endpoints))
        prompts = None
        if self.tokenizer is not None:
            from .render import render_prompts

            if not self._context_asked:
                self.context_length = await self._served_context(connections)
                self._context_asked = True
            prompts = render_prompts(
                self.tokenizer, conversations, self.max_prompt_tokens, params.max_new_tokens, self.context_length
            )

        async def one(i: int, conv: Messages) -> list[Sample]:
            extra: dict[str, Any] = {}
            if self.return_token_ids:
                extra["return_token_ids"] = True
            kwargs: dict[str, Any] = {
                "model": self.served_name,
                "n": params.n,
                "max_tokens": params.max_new_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
            }
            if not self.server_sampling_defaults:
                kwargs["presence_penalty"] = NEUTRAL_SAMPLING["presence_penalty"]  # standard OpenAI fields
                kwargs["frequency_penalty"] = NEUTRAL_SAMPLING["frequency_penalty"]
                if self.return_token_ids:  # a vLLM server: its own sampling fields too
                    extra.update({k: NEUTRAL_SAMPLING[k] for k in ("top_k", "min_p", "repetition_penalty")})
            if request is not None:
                kwargs["seed"] = request[i]  # the request's own seed (a vLLM server seeds sample j with seed + j)
            if params.logprobs:
                kwargs["logprobs"] = True if prompts is None else 1  # chat: a flag; completions: top-k count
            if params.stop:
                kwargs["stop"] = list(params.stop)
            if params.json_schema:
                kwargs["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": params.json_schema, "strict": True},
                }
            if extra:
                kwargs["extra_body"] = extra
            if prompts is None:
                kwargs["messages"] = conv
            else:
                kwargs["prompt"] = prompts[i]

            def create(client: Any) -> Awaitable[Any]:
                endpoint = client.chat.completions if prompts is None else client.completions
                return endpoint.create(**kwargs)

            async with limit:  # the same kwargs (prompt, seed) on every attempt, whichever server takes it
                response = await self._with_retries(
                    lambda tried: self._send(connections, create, kwargs["model"], tried), f"request {i}"
                )
            model = self._produced_by(response.model)
            choices = sorted(response.choices, key=lambda c: c.index)
            if len(choices) != params.n:
                raise RuntimeError(
                    f"{self.base_url or 'the OpenAI API'} answered request {i} with {len(choices)} choices for "
                    f"n={params.n}; this server does not honour n: ask for one sample per request (n=1)"
                )
            if prompts is None:
                return [self._sample(choice, model) for choice in choices]
            samples = [self._completion_sample(choice, prompts[i], model) for choice in choices]
            if any(not s.token_ids for s in samples):
                raise RuntimeError(
                    f"{self.base_url}: the server returned text without its token ids (model {kwargs['model']!r}); "
                    "a trainer trains on the sampled ids, so it needs a vLLM server that returns them "
                    "(`return_token_ids`, vLLM 0.10.2 or newer, e.g. `sotopia-env serve`)"
                )
            if params.logprobs and any(s.logprobs is None or len(s.logprobs) != len(s.token_ids) for s in samples):
                raise RuntimeError(
                    f"{self.base_url}: the server returned no log-prob per sampled token (model "
                    f"{kwargs['model']!r}); use a vLLM server (`sotopia-env serve`)"
                )
            return samples

        try:
            return list(await asyncio.gather(*(one(i, c) for i, c in enumerate(conversations))))
        finally:
            await connections.close()

    def _produced_by(self, served: str | None) -> str:
        """The model an answer names, as records name it: an adapter of ours as "base+path"."""
        if served in self.adapters:
            return f"{self.base_model}+{self.adapters[served]}"
        return served or self.served_name

    async def _served_context(self, connections: Connections) -> int | None:
        """The served model's context length as the server reports it (vLLM: `max_model_len` in /v1/models),
        or None where it does not."""
        import openai

        try:
            models = await self._with_retries(
                lambda tried: self._send(connections, lambda client: client.models.list(), self.served_name, tried),
                "the model list",
            )
        except openai.APIStatusError:  # a server without /v1/models: the context stays unknown
            return None
        cards = sorted(models.data, key=lambda card: card.id != self.base_model)  # the base model's card first
        lengths = [getattr(card, "max_model_len", None) for card in cards]
        return next((int(n) for n in lengths if n), None)

    @staticmethod
    def _sample(choice: Any, model: str) -> Sample:
        token_ids = list(getattr(choice, "token_ids", None) or [])
        logprobs = None
        if choice.logprobs is not None and choice.logprobs.content is not None:
            logprobs = [t.logprob for t in choice.logprobs.content]
        return Sample(
            text=choice.message.content or "",
            token_ids=token_ids,
            logprobs=logprobs,
            finish_reason=choice.finish_reason or "",
            model=model,
        )

    @staticmethod
    def _completion_sample(choice: Any, prompt_ids: list[int], model: str) -> Sample:
        served = getattr(choice, "prompt_token_ids", None)
        if served is not None and list(served) != prompt_ids:  # the server must sample from the ids we sent
            raise RuntimeError("the server reports other prompt token ids than the ones sent")
        logprobs = list(choice.logprobs.token_logprobs) if choice.logprobs is not None else None
        return Sample(
            text=choice.text or "",
            token_ids=list(getattr(choice, "token_ids", None) or []),
            logprobs=logprobs,
            finish_reason=choice.finish_reason or "",
            prompt_token_ids=list(prompt_ids),
            model=model,
        )

    def generate(
        self, conversations: list[Messages], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Sample]]:
        return run_sync(self.agenerate(conversations, params, seeds))

    # --- adapters --------------------------------------------------------------------------------

    def load_adapter(self, path: str) -> None:
        """Load a LoRA adapter into the vLLM server(s) at run time (`POST /v1/load_lora_adapter`).

        The servers must run with `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=true`, and each must
        be able to read `path`. Later requests name the adapter as their model. With a fleet, it is loaded
        into every server in service before this returns; a server out of service gets it before it serves
        again. Unreachable servers are retried like requests.
        """
        if not self.base_url:
            raise ValueError("load_adapter needs a base_url of a vLLM server")
        # The server keeps every adapter loaded under its name, from every client: a name unique to this
        # engine keeps a second engine (or process) from colliding with "adapter-v1" loaded earlier.
        name = f"adapter-{self._adapter_tag}-v{self.adapter_version + 1}"
        run_sync(self._load_everywhere(name, str(path)))
        self.adapters[name] = str(path)
        self.adapter_version += 1
        self.served_name = name
        self.model_name = f"{self.base_model}+{path}"

    async def _load_everywhere(self, name: str, path: str) -> None:
        connections = self._connections()

        async def attempt(tried: list[Endpoint]) -> None:
            targets = self.fleet.in_service()
            clients = [connections.client(e) for e in targets]
            results = await asyncio.gather(
                *(self._give_adapter(c, e, name, path) for c, e in zip(clients, targets)), return_exceptions=True
            )
            failures = []
            for client, endpoint, result in zip(clients, targets, results):
                if isinstance(result, BaseException):
                    tried.append(endpoint)
                    await self._failed(client, endpoint, result)
                    failures.append(result)
            refused = [r for r in failures if not self.retryable(r)]
            if refused:
                raise refused[0]
            if len(failures) == len(results):  # no server took it: retried (or reported) like a request
                raise failures[0]

        try:
            await self._with_retries(attempt, f"loading adapter {path}")
        finally:
            await connections.close()

    def unload_adapter(self, path: str) -> None:
        """Unload the adapter version(s) loaded from `path` from every server in service that holds them (`POST
        /v1/unload_lora_adapter`): GRPO prunes its old versions so (`keep_adapters`). A server out of service, or
        one the unload fails on, holds an unknown set: before it serves again it is given the current version and
        loses the ones unloaded meanwhile. The version now served cannot be unloaded."""
        names = [n for n, p in self.adapters.items() if p == str(path)]
        if self.served_name in names:
            raise ValueError(f"adapter {path} is the version in use ({self.served_name}); load another one first")
        for name in names:
            del self.adapters[name]
        if names:
            run_sync(self._unload_everywhere(names))

    async def _unload_everywhere(self, names: list[str]) -> None:
        connections = self._connections()

        async def unload(endpoint: Endpoint) -> None:
            for name in names:
                await self._unload(connections.client(endpoint), endpoint, name)

        now = time.monotonic()
        targets = [e for e in self.fleet.endpoints if e.in_service(now)]
        try:
            results = await asyncio.gather(*(unload(e) for e in targets), return_exceptions=True)
        finally:
            await connections.close()
        for endpoint, result in zip(targets, results):
            if isinstance(result, BaseException):
                endpoint.adapter = None  # unknown: cleaned up (`_give_adapter`) before it next serves
                log.warning(
                    "could not unload %s from %s (%s); retried before it next serves", names, endpoint.url, result
                )


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, also when an event loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
