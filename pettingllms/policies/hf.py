"""The `hf` backend: a local transformers model, with concurrent requests batched.

The rollout runner keeps many episodes in flight, and each awaits its own reply. Calling
`model.generate` once per reply would leave the accelerator mostly idle, so requests go into
a queue and one worker task serves them: it takes everything pending (up to
`max_batch_size`) that shares the same sampling settings, left-pads the prompts, and runs a
single `generate` in a worker thread, so the event loop keeps the episodes moving meanwhile.

    >>> policy = HFPolicy()                  # the tiny built-in model
    >>> policy = HFPolicy("coder", "/models/Qwen2.5-1.5B-Instruct", dtype="bfloat16")
    >>> generation = await policy.generate(GenerationRequest(messages))

The prompt is the model's own chat template with the generation prompt appended, and it is
returned as `Generation.prompt_text`, so the text trained on is exactly the text seen.
Sampling is reproducible for a given `seed` and the same batches; greedy (temperature 0) is
reproducible always.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

from pettingllms.exceptions import ConfigError, ModelNotFoundError, PolicyError
from pettingllms.models import choose_cpu_threads, find_model_dir, load_causal_lm, load_tokenizer, resolve_model
from pettingllms.policies.base import Generation, GenerationRequest, Policy, SamplingParams

# torch's random generator is one per process: two policies sampling at the same time in
# worker threads would interleave their draws, so "seed, then generate" is one critical
# section. A single accelerator runs one generate at a time anyway.
_GENERATE_LOCK = threading.Lock()

DTYPES = ("auto", "float32", "bfloat16", "float16")
BATCH_WAIT_SHARE = 0.2
"""Longest wait for a fuller batch, as a share of the last generate's time (see `_wait_for_a_full_batch`)."""


@dataclass(eq=False)
class _Pending:
    """A request waiting for its reply; compared by identity."""

    request: GenerationRequest
    future: asyncio.Future


class HFPolicy(Policy):
    """A local transformers causal LM; concurrent `generate` calls share one batched call.

    Args:
        name: the `policy_name` written into records.
        model_path: a local folder with `config.json`, a LoRA adapter folder (loaded on the
            base it names, once `models.check_adapter_fits` agrees), or a Hub id already in
            the local cache (nothing is downloaded). None: the tiny built-in model.
        device: "auto" (cuda, then mps, then cpu) or any torch device string.
        dtype: "auto" (bfloat16 on GPUs that support it, else float32) or a dtype name.
        max_batch_size: most requests in one `generate` call.
        seed: seeds each batch's sampling, together with the batch's number.
        torch_threads: CPU threads for torch (None: `models.choose_cpu_threads` decides).
    """

    def __init__(
        self,
        name: str = "shared_model",
        model_path: str | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_batch_size: int = 16,
        seed: int = 0,
        torch_threads: int | None = None,
    ):
        super().__init__(name)
        if dtype not in DTYPES:
            raise ConfigError(f"Unknown dtype {dtype!r} for the hf policy; expected one of {', '.join(DTYPES)}.")
        if max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be at least 1, got {max_batch_size}.")
        self.model_path = model_path
        # None stays None until load(): building the tiny model imports torch, too slow here.
        self.model_dir = None if model_path is None else find_model_dir(model_path)
        self.device, self.dtype = device, dtype
        self.max_batch_size, self.seed, self.torch_threads = max_batch_size, seed, torch_threads
        self.model: Any = None
        self.tokenizer: Any = None
        self.batches_served = 0
        self._end_ids: list[int] = []
        self._pending: list[_Pending] = []
        self._largest_batch = 1
        self._wait_s = 0.0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._worker_loop: asyncio.AbstractEventLoop | None = None

    # --- loading (blocking; the worker runs it in a thread) -----------------------------

    def load(self) -> None:
        """Load the tokenizer and model, once. Blocking: async code gets it via a thread."""
        if self.model is not None:
            return
        path = self.model_dir or resolve_model(None)
        device = pick_device(self.device)
        tokenizer = load_tokenizer(path)
        if tokenizer.chat_template is None:
            raise ModelNotFoundError(
                f"Model {path!r} has no chat template; the hf policy needs a chat (instruct) model."
            )
        model = load_causal_lm(path, dtype=pick_dtype(self.dtype, device), device=device).eval()
        choose_cpu_threads(model, self.torch_threads)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._end_ids = end_of_turn_ids(model, tokenizer)
        self.tokenizer, self.model = tokenizer, model

    # --- the async side: queue, worker, batches -----------------------------------------

    async def generate(self, request: GenerationRequest) -> Generation:
        """Queue the request and wait for the batch that serves it."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(request, future))
        self._wake_worker()
        return await future

    def _wake_worker(self) -> None:
        """Start the worker in this event loop if it is not running there, then wake it."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._worker_loop is not loop:
            # asyncio.run() per call (a sync caller) gives a new loop each time; an Event
            # and a Task belong to one loop, so both are made anew.
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._serve_forever())
            self._worker_loop = loop
        self._wakeup.set()

    async def _serve_forever(self) -> None:
        """Serve batches while requests are pending; sleep when the queue is empty."""
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                if self.model is None and not await self._load_or_fail_pending():
                    continue
                while self._pending:
                    await self._wait_for_a_full_batch()
                    await self._serve_batch(self._take_batch())
        finally:
            # Closed or cancelled: nobody may be left waiting for a reply that never comes.
            fail_all(self._pending, PolicyError("closed", f"hf policy {self.name!r} was closed"))
            self._pending = []

    async def _load_or_fail_pending(self) -> bool:
        """Load the model in a thread; on failure hand the error to every waiting caller."""
        try:
            await asyncio.to_thread(self.load)
            return True
        except Exception as error:  # each caller gets it; the next request retries
            fail_all(self._pending, error)
            self._pending = []
            return False

    async def _wait_for_a_full_batch(self) -> None:
        """Give the callers of the last batch a moment to ask again before a smaller batch is served.

        After a batch, its episodes step their envs (in threads) and come back one by one;
        serving the first alone splits the batch for the rest of the run (16 episodes in flight
        were served as 9 + 7, 9 + 7, ...). So wait until as many requests are pending as the
        largest batch so far, for at most a fifth of the last generate's time: a caller that
        does not come back (its episode ended, the run is ending) costs at most that, once.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_s
        while len(self._pending) < min(self._largest_batch, self.max_batch_size):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Pending]:
        """Remove and return the oldest request plus the next ones sampled the same way."""
        key = sampling_key(self._pending[0].request.sampling)
        batch = [item for item in self._pending if sampling_key(item.request.sampling) == key]
        batch = batch[: self.max_batch_size]
        self._pending = [item for item in self._pending if item not in batch]
        return batch

    async def _serve_batch(self, batch: list[_Pending]) -> None:
        """Render the prompts, run one generate in a thread, resolve each caller's future."""
        waiting, prompts = [], []
        for item in batch:
            if item.future.done():  # the caller gave up (cancelled) while it queued
                continue
            try:
                prompts.append(self.render_prompt(item.request.messages))
                waiting.append(item)
            except Exception as error:  # a bad request fails alone
                settle(item.future, error=PolicyError("prompt_error", f"could not render the chat template: {error}"))
        if not waiting:
            return
        self.batches_served += 1
        self._largest_batch = max(self._largest_batch, len(waiting))
        # torch's CPU generator keeps 32 bits of a seed; spread seeds a million batches apart
        # so that neighbouring seeds do not replay each other's streams.
        batch_seed = (self.seed * 1_000_003 + self.batches_served) % 2**32
        started = time.perf_counter()
        try:
            generations = await asyncio.to_thread(self._generate_batch, prompts, batch[0].request.sampling, batch_seed)
        except asyncio.CancelledError:
            fail_all(waiting, PolicyError("closed", f"hf policy {self.name!r} was closed"))
            raise
        except Exception as error:  # reported to every caller of the batch
            fail_all(waiting, PolicyError("generate_error", f"hf generate failed: {error!r}"))
            return
        self._wait_s = BATCH_WAIT_SHARE * (time.perf_counter() - started)
        for item, generation in zip(waiting, generations):
            settle(item.future, result=generation)

    # --- the blocking side: prompts, generate, decoding ---------------------------------

    def render_prompt(self, messages: list[dict[str, str]]) -> str:
        """The exact text the model sees: its chat template plus the assistant header."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _generate_batch(self, prompts: list[str], sampling: SamplingParams, seed: int) -> list[Generation]:
        """Run one left-padded `generate` over the prompts (in a worker thread)."""
        import torch

        # The template already wrote every special token; add_special_tokens would double a BOS.
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        inputs = inputs.to(self.model.device)
        options = generate_options(sampling, self._end_ids, self.tokenizer.pad_token_id)
        if sampling.stop:
            options.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        with _GENERATE_LOCK, torch.inference_mode():
            torch.manual_seed(seed)
            output = self.model.generate(**inputs, **options)
        prompt_width = inputs["input_ids"].shape[1]
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        return [
            self._to_generation(row[prompt_width:].tolist(), prompt, length, sampling.stop)
            for row, prompt, length in zip(output, prompts, prompt_lengths)
        ]

    def _to_generation(self, new_ids: list[int], prompt: str, prompt_tokens: int, stop: list[str]) -> Generation:
        """Cut the new tokens at end of turn, decode them, cut the text at a stop string."""
        finish_reason = "length"
        end = next((index for index, token in enumerate(new_ids) if token in self._end_ids), None)
        if end is not None:
            new_ids, finish_reason = new_ids[: end + 1], "stop"
        else:  # a row stopped early by a stop string is padded to the batch's length
            while new_ids and new_ids[-1] == self.tokenizer.pad_token_id:
                new_ids = new_ids[:-1]
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        cut = truncate_at_stop(text, stop)
        if cut is not None:
            text, finish_reason = cut, "stop"
        return Generation(
            text=text,
            prompt_text=prompt,
            prompt_tokens=int(prompt_tokens),
            completion_tokens=len(new_ids),
            finish_reason=finish_reason,
        )

    async def close(self) -> None:
        """Stop the worker (waiting callers get a PolicyError) and free the model."""
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done():
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        self.model = self.tokenizer = None
        free_accelerator_memory()


# --- helpers -------------------------------------------------------------------------------


def pick_device(device: str) -> str:
    """Resolve "auto" to the best accelerator present."""
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(dtype: str, device: str) -> Any:
    """Resolve "auto": bfloat16 where the GPU supports it, float32 elsewhere (CPU, old GPUs)."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def end_of_turn_ids(model: Any, tokenizer: Any) -> list[int]:
    """Token ids that end a reply: the generation config's eos ids, the tokenizer's eos, <|im_end|>."""
    configured = model.generation_config.eos_token_id
    ids = list(configured) if isinstance(configured, (list, tuple)) else [configured]
    ids.append(tokenizer.eos_token_id)
    if "<|im_end|>" in tokenizer.get_vocab():
        ids.append(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    return sorted({token for token in ids if token is not None})


def generate_options(sampling: SamplingParams, end_ids: list[int], pad_id: int | None) -> dict[str, Any]:
    """`generate` keyword arguments for one sampling setting; temperature 0 means greedy."""
    options: dict[str, Any] = {
        "max_new_tokens": sampling.max_tokens,
        "eos_token_id": end_ids or None,
        "pad_token_id": pad_id,
    }
    if sampling.temperature > 0:
        options.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
    else:
        # Unset the model's own sampling defaults, which would only warn under greedy search.
        options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return options


def sampling_key(sampling: SamplingParams) -> tuple:
    """Requests with equal keys can share one `generate` call."""
    return (sampling.temperature, sampling.top_p, sampling.max_tokens, tuple(sampling.stop))


def truncate_at_stop(text: str, stop: list[str]) -> str | None:
    """`text` cut before the earliest stop string, or None when none occurs."""
    positions = [text.find(marker) for marker in stop if marker and marker in text]
    return text[: min(positions)] if positions else None


def settle(future: asyncio.Future, *, result: Any = None, error: BaseException | None = None) -> None:
    """Resolve a future unless its caller already gave up on it."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def fail_all(items: list[_Pending], error: BaseException) -> None:
    """Hand the same error to every waiting caller."""
    for item in items:
        settle(item.future, error=error)


def free_accelerator_memory() -> None:
    """Return cached GPU memory after the model is dropped (no-op without CUDA or torch)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
