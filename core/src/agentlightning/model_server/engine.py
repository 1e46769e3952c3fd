"""The generation engine: batched decoding of a Hugging Face causal LM on a worker thread.

Requests are queued by :meth:`GenerationEngine.submit`. A single worker thread takes every queued
request (up to ``max_batch_size`` rows; a request with ``n`` choices is ``n`` rows) and decodes them
together: the prompts are left-padded and prefilled once per request, the KV cache is expanded to one row
per choice, and each step runs one forward pass over the rows still alive with per-row sampling
parameters and stop conditions. Requests that arrive meanwhile wait for the next batch. Weight swaps
(:meth:`load_weights`, :meth:`load_lora`, ...) run on the same thread between two batches, so a batch
never sees two versions of the model.

Logprobs are those of the *raw model distribution*: ``log_softmax`` of the float32 logits at
temperature 1, whatever temperature, top-p or top-k the token was sampled with. That is what a policy
gradient (GRPO/PPO) needs to compare against the trainer's own forward pass. ``top_logprobs`` come from the
same distribution.

This module imports torch; :mod:`agentlightning` itself never imports it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, TypeVar, Union

import torch

from agentlightning.model_server.chat_template import CHATML_TOOLS_TEMPLATE
from agentlightning.model_server.protocol import SamplingParams
from agentlightning.model_server.text import IncrementalDetokenizer, StopStringMatcher

__all__ = [
    "EngineClosedError",
    "GenerationEngine",
    "GenerationHandle",
    "GenerationResult",
    "PromptTooLongError",
    "SamplingParams",
    "TokenStep",
    "load_model_and_tokenizer",
    "resolve_dtype",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DTYPES: Dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


class EngineClosedError(RuntimeError):
    """The engine was closed before the request finished."""


class PromptTooLongError(ValueError):
    """The prompt leaves no room for a completion within the context length."""


@dataclass(frozen=True)
class TokenStep:
    """One generated token of one choice, as the worker reports it.

    ``text`` is the text that became final with this token (possibly ``""``: an incomplete UTF-8
    character, a possible stop-string start, or an end-of-sequence token). ``finish_reason`` is set on
    the choice's last step: ``"stop"`` (end-of-sequence, a stop token or a stop string) or ``"length"``
    (``max_tokens`` or the context length).
    """

    choice: int
    token_id: int
    logprob: float
    top_logprobs: Tuple[Tuple[int, float], ...]
    text: str
    finish_reason: Optional[str] = None


@dataclass
class GenerationResult:
    """A finished choice, for callers of :meth:`GenerationEngine.generate`."""

    token_ids: List[int] = field(default_factory=list)
    logprobs: List[float] = field(default_factory=list)
    text: str = ""
    finish_reason: Optional[str] = None


StepsCallback = Callable[[List[TokenStep]], None]
ErrorCallback = Callable[[BaseException], None]


class GenerationHandle:
    """A submitted request; :meth:`cancel` drops its rows at the next step."""

    def __init__(
        self,
        prompt_ids: List[int],
        params: SamplingParams,
        n: int,
        on_steps: StepsCallback,
        on_error: ErrorCallback,
    ) -> None:
        self.prompt_ids = prompt_ids
        self.params = params
        self.n = n
        self.on_steps = on_steps
        self.on_error = on_error
        self.cancelled = False
        self.submitted_at = time.monotonic()
        self.weights_version: Optional[int] = None  # the version that generated it, set when its batch starts

    def cancel(self) -> None:
        self.cancelled = True


class _Row:
    """One choice being decoded."""

    def __init__(self, handle: GenerationHandle, choice: int, max_tokens: int, decode: Callable[..., str]) -> None:
        self.handle = handle
        self.choice = choice
        self.params = handle.params
        self.max_tokens = max_tokens
        self.generated = 0
        self.finished = False
        self.detokenizer = IncrementalDetokenizer(decode)
        self.stops = StopStringMatcher(self.params.stop)
        self.generator: Optional[torch.Generator] = None
        if self.params.temperature > 0:
            self.generator = torch.Generator()
            seed = self.params.seed + choice if self.params.seed is not None else random.getrandbits(63)
            self.generator.manual_seed(seed)


def resolve_dtype(name: str, device: str = "cpu") -> torch.dtype:
    """``"auto"`` is float32 on CPU (exact logprobs) and bfloat16 on an accelerator."""
    if name == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def load_model_and_tokenizer(model: str, *, dtype: str = "auto", device: str = "cpu") -> Tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a local folder or a Hugging Face id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    loaded: Any = AutoModelForCausalLM.from_pretrained(model, dtype=resolve_dtype(dtype, device))
    loaded.to(device)
    loaded.eval()
    loaded.requires_grad_(False)
    return loaded, tokenizer


def _as_id_list(value: Any) -> List[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


class GenerationEngine:
    """Batched generation over a causal LM (see the module docstring).

    Args:
        model: a ``transformers`` causal LM (``AutoModelForCausalLM``), already on its device.
        tokenizer: its tokenizer. One without a chat template gets a ChatML one.
        model_name: the name served as ``model``.
        max_batch_size: the most rows (choices) decoded together.
        context_length: prompt plus completion limit; default: the model's ``max_position_embeddings``.
        batch_window_s: when idle, how long the worker waits for more requests before starting a batch.
        default_max_tokens: completion limit for requests that set none (default: the rest of the context).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_name: str,
        max_batch_size: int = 16,
        context_length: Optional[int] = None,
        batch_window_s: float = 0.005,
        default_max_tokens: Optional[int] = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.model = model
        self.tokenizer = tokenizer
        if getattr(tokenizer, "chat_template", None) is None:
            tokenizer.chat_template = CHATML_TOOLS_TEMPLATE
        self.model_name = model_name
        self.max_batch_size = max_batch_size
        model_context = int(getattr(model.config, "max_position_embeddings", 0) or 0) or 4096
        self.context_length = int(context_length or model_context)
        self.batch_window_s = batch_window_s
        self.default_max_tokens = default_max_tokens
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.config.vocab_size)
        # Ids past the tokenizer's vocabulary (padding rows of the embedding) are never sampled.
        self.sampleable_ids = min(self.vocab_size, len(tokenizer))
        self.eos_token_ids = self._eos_ids()
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else sorted(self.eos_token_ids)[0])

        self.weights_version = 0
        self.lora_source: Optional[str] = None
        self._peft_model: Any = None
        self._lora_config: Optional[Dict[str, Any]] = None

        self.stats: Dict[str, Any] = {
            "requests": 0,
            "batches": 0,
            "rows": 0,
            "prompt_tokens": 0,
            "generated_tokens": 0,
            "max_batch_rows": 0,
            "last_batch_rows": 0,
            "decode_seconds": 0.0,
        }
        self._cond = threading.Condition()
        self._queue: List[GenerationHandle] = []
        self._controls: List[Tuple[Callable[[], Any], Future[Any]]] = []
        self._closing = False
        self._busy = False
        self._worker = threading.Thread(target=self._work, name="agl-model-engine", daemon=True)
        self._worker.start()

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        *,
        dtype: str = "auto",
        device: str = "cpu",
        model_name: Optional[str] = None,
        **kwargs: Any,
    ) -> GenerationEngine:
        """Load ``model`` (a folder or a Hugging Face id) and start an engine on it."""
        loaded, tokenizer = load_model_and_tokenizer(model, dtype=dtype, device=device)
        name = model_name or (Path(model).name if Path(model).exists() else model)
        return cls(loaded, tokenizer, model_name=name, **kwargs)

    def _eos_ids(self) -> Set[int]:
        ids = set(_as_id_list(getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)))
        ids.update(_as_id_list(getattr(self.model.config, "eos_token_id", None)))
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return ids

    # -- requests -------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """A batch is being decoded right now."""
        return self._busy

    @property
    def queued(self) -> int:
        return len(self._queue)

    def max_new_tokens(self, prompt_length: int, requested: Optional[int]) -> int:
        """How many tokens a choice may generate: the request's limit, capped by the context."""
        room = self.context_length - prompt_length
        limit = requested if requested is not None else self.default_max_tokens
        return room if limit is None else min(limit, room)

    def submit(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        *,
        n: int = 1,
        on_steps: StepsCallback,
        on_error: ErrorCallback,
    ) -> GenerationHandle:
        """Queue a request. Callbacks run on the worker thread: keep them short and thread-safe.

        ``on_steps`` gets the steps of one decoding iteration (one per live choice); ``on_error`` is called
        once instead if decoding fails or the engine closes.
        """
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        if len(prompt_ids) >= self.context_length:
            raise PromptTooLongError(
                f"the prompt has {len(prompt_ids)} tokens; the context length is {self.context_length}, "
                "which leaves no room for a completion"
            )
        if not 1 <= n <= self.max_batch_size:
            raise ValueError(f"n must be between 1 and the maximum batch size {self.max_batch_size}")
        handle = GenerationHandle(list(prompt_ids), params, n, on_steps, on_error)
        with self._cond:
            if self._closing:
                raise EngineClosedError("the engine is closed")
            self._queue.append(handle)
            self._cond.notify_all()
        return handle

    def generate(
        self, prompt_ids: Sequence[int], params: SamplingParams, *, n: int = 1, timeout: Optional[float] = None
    ) -> List[GenerationResult]:
        """Blocking convenience: generate ``n`` choices for one prompt (call it off the event loop)."""
        results = [GenerationResult() for _ in range(n)]
        done: Future[None] = Future()
        remaining = [n]

        def on_steps(steps: List[TokenStep]) -> None:
            for step in steps:
                result = results[step.choice]
                result.token_ids.append(step.token_id)
                result.logprobs.append(step.logprob)
                result.text += step.text
                if step.finish_reason is not None:
                    result.finish_reason = step.finish_reason
                    remaining[0] -= 1
            if remaining[0] == 0 and not done.done():
                done.set_result(None)

        def on_error(exc: BaseException) -> None:
            if not done.done():
                done.set_exception(exc)

        self.submit(prompt_ids, params, n=n, on_steps=on_steps, on_error=on_error)
        done.result(timeout=timeout)
        return results

    # -- weights --------------------------------------------------------------------------------

    def run_between_batches(self, action: Callable[[], T]) -> Future[T]:
        """Run ``action`` on the worker thread after the batch in flight and before the next one."""
        future: Future[T] = Future()
        with self._cond:
            if self._closing:
                raise EngineClosedError("the engine is closed")
            self._controls.append((action, future))
            self._cond.notify_all()
        return future

    def request_load_weights(self, source: Union[str, Path, Mapping[str, Any]]) -> Future[int]:
        """Schedule :meth:`load_weights`; the future gives the new ``weights_version``."""
        return self.run_between_batches(lambda: self._apply_weights(source))

    def request_load_lora(self, adapter: Union[str, Path]) -> Future[int]:
        """Schedule :meth:`load_lora`; the future gives the new ``weights_version``."""
        path = Path(adapter)
        return self.run_between_batches(lambda: self._apply_lora_folder(path))

    def request_load_lora_state_dict(
        self, state_dict: Mapping[str, Any], config: Union[Mapping[str, Any], Any], *, name: str = "in-memory"
    ) -> Future[int]:
        """Schedule :meth:`load_lora_state_dict`; the future gives the new ``weights_version``."""
        tensors = dict(state_dict)
        return self.run_between_batches(lambda: self._apply_lora(tensors, config, name))

    def request_unload_lora(self) -> Future[int]:
        """Schedule :meth:`unload_lora`; the future gives the new ``weights_version``."""
        return self.run_between_batches(self._remove_lora)

    def load_weights(self, source: Union[str, Path, Mapping[str, Any]], timeout: Optional[float] = None) -> int:
        """Replace the model's weights (all or some of them) and return the new ``weights_version``.

        ``source`` is a state dict, a ``.safetensors`` / ``.bin`` / ``.pt`` file, or a folder holding
        such files (a ``save_pretrained`` folder). Names are those of ``model.state_dict()``; names missing
        from ``source`` keep their values. A LoRA adapter that is loaded stays loaded on the new weights.
        Blocks until applied (after the batch in flight); raises ``ValueError`` for weights that do not fit.
        """
        return self.request_load_weights(source).result(timeout)

    def load_lora(self, adapter: Union[str, Path], timeout: Optional[float] = None) -> int:
        """Load a PEFT LoRA adapter folder (``save_pretrained`` output), replacing any loaded adapter."""
        return self.request_load_lora(adapter).result(timeout)

    def load_lora_state_dict(
        self,
        state_dict: Mapping[str, Any],
        config: Union[Mapping[str, Any], Any],
        *,
        name: str = "in-memory",
        timeout: Optional[float] = None,
    ) -> int:
        """Load a LoRA adapter from memory, replacing any loaded adapter.

        ``state_dict`` is what ``peft.get_peft_model_state_dict(peft_model)`` returns; ``config`` is a
        ``peft.LoraConfig`` or its ``to_dict()``. With the same config as the loaded adapter only the
        tensors are copied, which is cheap enough to do after every training step.
        """
        return self.request_load_lora_state_dict(state_dict, config, name=name).result(timeout)

    def unload_lora(self, timeout: Optional[float] = None) -> int:
        """Remove the loaded LoRA adapter (no-op without one); returns the new ``weights_version``."""
        return self.request_unload_lora().result(timeout)

    def _bump_version(self) -> int:
        self.weights_version += 1
        return self.weights_version

    def _apply_weights(self, source: Union[str, Path, Mapping[str, Any]]) -> int:
        state = dict(source) if isinstance(source, Mapping) else _read_state_dict(Path(source))
        if not state:
            raise ValueError("the new weights are empty")
        # Tied weights (lm_head and the embeddings) appear under both names, as in state_dict().
        targets = dict(self.model.named_parameters(remove_duplicate=False))
        targets.update(dict(self.model.named_buffers(remove_duplicate=False)))
        plan: List[Tuple[torch.Tensor, torch.Tensor]] = []
        unknown: List[str] = []
        for name, tensor in state.items():
            target = targets.get(name)
            if target is None and name.endswith((".weight", ".bias")):
                # With a LoRA adapter loaded, peft moved the original layer to `<name>.base_layer`.
                stem, _, leaf = name.rpartition(".")
                target = targets.get(f"{stem}.base_layer.{leaf}")
            if target is None:
                unknown.append(name)
                continue
            if not isinstance(tensor, torch.Tensor):
                raise ValueError(f"weight {name!r} is not a tensor")
            if tuple(tensor.shape) != tuple(target.shape):
                raise ValueError(
                    f"weight {name!r} has shape {tuple(tensor.shape)}, the model has {tuple(target.shape)}"
                )
            plan.append((target, tensor))
        if unknown:
            shown = ", ".join(sorted(unknown)[:5])
            raise ValueError(f"{len(unknown)} weight names are not in the model, for example: {shown}")
        with torch.no_grad():
            for target, tensor in plan:
                target.copy_(tensor.to(device=target.device, dtype=target.dtype))
        logger.info("loaded %d weight tensors", len(plan))
        return self._bump_version()

    def _apply_lora_folder(self, path: Path) -> int:
        from peft import LoraConfig
        from peft.utils import load_peft_weights

        if not (path / "adapter_config.json").is_file():
            raise ValueError(f"{path} is not a PEFT adapter folder (no adapter_config.json)")
        config = LoraConfig.from_pretrained(str(path))
        state = load_peft_weights(str(path), device=str(self.device))
        return self._apply_lora(state, config, str(path))

    def _apply_lora(self, state: Dict[str, Any], config: Any, source: str) -> int:
        from peft import LoraConfig, get_peft_model
        from peft.utils import set_peft_model_state_dict

        if not isinstance(config, LoraConfig):
            fields = {key: value for key, value in dict(config).items() if key in LoraConfig.__dataclass_fields__}
            config = LoraConfig(**fields)
        config.inference_mode = True
        signature = _lora_signature(config)
        if self._peft_model is None or signature != self._lora_config:
            self._remove_lora_layers()
            self._peft_model = get_peft_model(self.model, config)
            self._lora_config = signature
        result = set_peft_model_state_dict(self._peft_model, state)
        unexpected = [key for key in getattr(result, "unexpected_keys", []) if "lora_" in key]
        if unexpected:
            self._remove_lora_layers()
            raise ValueError(f"the adapter does not fit the model; unexpected tensors such as {unexpected[0]!r}")
        self.model.eval()
        self.model.requires_grad_(False)
        self.lora_source = source
        return self._bump_version()

    def _remove_lora_layers(self) -> None:
        if self._peft_model is not None:
            # `unload` strips the LoRA layers without merging them, giving back the original modules.
            self.model = self._peft_model.unload()
            self._peft_model = None
            self._lora_config = None
            self.lora_source = None

    def _remove_lora(self) -> int:
        self._remove_lora_layers()
        return self._bump_version()

    # -- worker ---------------------------------------------------------------------------------

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker after the batch in flight; queued requests fail with :class:`EngineClosedError`."""
        with self._cond:
            self._closing = True
            queued, self._queue = self._queue, []
            controls, self._controls = self._controls, []
            self._cond.notify_all()
        for handle in queued:
            handle.on_error(EngineClosedError("the model server is shutting down"))
        for _action, future in controls:
            future.set_exception(EngineClosedError("the model server is shutting down"))
        if threading.current_thread() is not self._worker:
            self._worker.join(timeout)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not (self._queue or self._controls or self._closing):
                    self._cond.wait()
                if self._closing:
                    return
                controls, self._controls = self._controls, []
            for action, future in controls:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(action())
                    except BaseException as exc:  # noqa: BLE001 -- handed to the caller
                        future.set_exception(exc)
            batch = self._take_batch()
            if batch:
                self._busy = True
                try:
                    self._run_batch(batch)
                finally:
                    self._busy = False

    def _take_batch(self) -> List[GenerationHandle]:
        with self._cond:
            if not self._queue:
                return []
            deadline = time.monotonic() + self.batch_window_s
            # A short wait lets requests sent together (an agent's parallel calls, a GRPO group) share a batch.
            while sum(h.n for h in self._queue) < self.max_batch_size and not self._controls and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch: List[GenerationHandle] = []
            rows = 0
            rest: List[GenerationHandle] = []
            for handle in self._queue:
                if handle.cancelled:
                    continue
                if rows + handle.n <= self.max_batch_size and (not rest):
                    batch.append(handle)
                    rows += handle.n
                else:
                    rest.append(handle)  # keep arrival order: nothing overtakes a waiting request
            self._queue = rest
            return batch

    def _run_batch(self, handles: List[GenerationHandle]) -> None:
        started = time.monotonic()
        for handle in handles:
            handle.weights_version = self.weights_version
        try:
            with torch.inference_mode():
                generated = self._decode(handles)
        except BaseException as exc:  # noqa: BLE001 -- reported to every request of the batch
            logger.exception("generation failed")
            for handle in handles:
                handle.on_error(exc)
            return
        rows = sum(h.n for h in handles)
        self.stats["requests"] += len(handles)
        self.stats["batches"] += 1
        self.stats["rows"] += rows
        self.stats["prompt_tokens"] += sum(len(h.prompt_ids) for h in handles)
        self.stats["generated_tokens"] += generated
        self.stats["last_batch_rows"] = rows
        self.stats["max_batch_rows"] = max(self.stats["max_batch_rows"], rows)
        self.stats["decode_seconds"] += time.monotonic() - started

    def _decode_text(self, skip_special_tokens: bool) -> Callable[[Sequence[int]], str]:
        tokenizer = self.tokenizer

        def decode(ids: Sequence[int]) -> str:
            return str(
                tokenizer.decode(ids, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False)
            )

        return decode

    def _forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        output = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        last: torch.Tensor = output.logits[:, -1, :]
        return last.float()

    def _decode(self, handles: List[GenerationHandle]) -> int:
        from transformers import DynamicCache

        device = self.device
        longest = max(len(h.prompt_ids) for h in handles)
        input_ids = torch.full((len(handles), longest), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(handles), longest), dtype=torch.long)
        for index, handle in enumerate(handles):
            length = len(handle.prompt_ids)
            input_ids[index, longest - length :] = torch.tensor(handle.prompt_ids, dtype=torch.long)
            attention[index, longest - length :] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        cache: Any = DynamicCache()
        logits = self._forward(input_ids.to(device), attention.to(device), positions.to(device), cache)

        rows: List[_Row] = []
        row_sources: List[int] = []
        for index, handle in enumerate(handles):
            limit = self.max_new_tokens(len(handle.prompt_ids), handle.params.max_tokens)
            decode = self._decode_text(handle.params.skip_special_tokens)
            for choice in range(handle.n):
                rows.append(_Row(handle, choice, limit, decode))
                row_sources.append(index)
        if len(rows) != len(handles):
            # One prefill per request, then one cache row per choice.
            source = torch.tensor(row_sources, dtype=torch.long, device=device)
            cache.reorder_cache(source)
            logits = logits.index_select(0, source)
            attention = attention.index_select(0, source.cpu())
        next_position = torch.tensor([len(row.handle.prompt_ids) for row in rows], dtype=torch.long)
        attention = attention.to(device)
        generated = 0

        while True:
            tokens, chosen_logprobs, tops = self._choose(logits, rows)
            generated += len(rows)
            steps_by_handle: Dict[int, Tuple[GenerationHandle, List[TokenStep]]] = {}
            for row, token, logprob, top in zip(rows, tokens, chosen_logprobs, tops, strict=True):
                step = self._advance(row, token, logprob, top)
                steps_by_handle.setdefault(id(row.handle), (row.handle, []))[1].append(step)
            for handle, steps in steps_by_handle.values():
                if not handle.cancelled:
                    handle.on_steps(steps)
            alive = [i for i, row in enumerate(rows) if not row.finished and not row.handle.cancelled]
            if not alive:
                return generated
            token_tensor = torch.tensor(tokens, dtype=torch.long)
            if len(alive) < len(rows):
                keep = torch.tensor(alive, dtype=torch.long)
                cache.batch_select_indices(keep.to(device))
                attention = attention.index_select(0, keep.to(device))
                next_position = next_position.index_select(0, keep)
                token_tensor = token_tensor.index_select(0, keep)
                rows = [rows[i] for i in alive]
            attention = torch.cat([attention, attention.new_ones((len(rows), 1))], dim=1)
            logits = self._forward(
                token_tensor[:, None].to(device), attention, next_position[:, None].to(device), cache
            )
            next_position += 1

    def _choose(
        self, logits: torch.Tensor, rows: List[_Row]
    ) -> Tuple[List[int], List[float], List[Tuple[Tuple[int, float], ...]]]:
        """Pick each row's next token; return it with its raw logprob and the raw top logprobs."""
        logprobs = torch.log_softmax(logits, dim=-1)
        if self.sampleable_ids < logits.shape[-1]:
            logits = logits.clone()
            logits[:, self.sampleable_ids :] = float("-inf")
        chosen = logits.argmax(dim=-1)
        sampled = [i for i, row in enumerate(rows) if row.params.temperature > 0]
        if sampled:
            index = torch.tensor(sampled, dtype=torch.long, device=logits.device)
            temperatures = torch.tensor(
                [rows[i].params.temperature for i in sampled], dtype=logits.dtype, device=logits.device
            )
            scaled = logits.index_select(0, index) / temperatures[:, None]
            for j, i in enumerate(sampled):
                top_k = rows[i].params.top_k
                if 0 < top_k < scaled.shape[-1]:
                    threshold = torch.topk(scaled[j], top_k).values[-1]
                    scaled[j] = scaled[j].masked_fill(scaled[j] < threshold, float("-inf"))
            top_p = torch.tensor([rows[i].params.top_p for i in sampled], dtype=logits.dtype, device=logits.device)
            if bool((top_p < 1.0).any()):
                ordered, order = torch.sort(scaled, dim=-1, descending=True)
                probabilities = torch.softmax(ordered, dim=-1)
                # Drop a token when the tokens above it already reach top_p (the first one always stays).
                drop = (probabilities.cumsum(dim=-1) - probabilities) >= top_p[:, None]
                ordered = ordered.masked_fill(drop, float("-inf"))
                scaled = torch.full_like(scaled, float("-inf")).scatter(-1, order, ordered)
            probabilities = torch.softmax(scaled, dim=-1)
            for j, i in enumerate(sampled):
                chosen[i] = torch.multinomial(probabilities[j], 1, generator=rows[i].generator)[0]
        chosen_logprobs = logprobs.gather(1, chosen[:, None]).squeeze(1)
        top_count = max(row.params.top_logprobs for row in rows)
        tops: List[Tuple[Tuple[int, float], ...]] = [() for _ in rows]
        if top_count > 0:
            values, ids = torch.topk(logprobs, top_count, dim=-1)
            value_lists, id_lists = values.tolist(), ids.tolist()
            for i, row in enumerate(rows):
                count = row.params.top_logprobs
                tops[i] = tuple(zip(id_lists[i][:count], value_lists[i][:count], strict=True))
        return chosen.tolist(), chosen_logprobs.tolist(), tops

    def _advance(self, row: _Row, token: int, logprob: float, top: Tuple[Tuple[int, float], ...]) -> TokenStep:
        """Account for one new token of ``row`` and work out its text and whether the choice ends."""
        row.generated += 1
        finish: Optional[str] = None
        text = ""
        stops_here = token in row.params.stop_token_ids or (not row.params.ignore_eos and token in self.eos_token_ids)
        if stops_here:
            finish = "stop"
        else:
            text, stopped = row.stops.push(row.detokenizer.add(token))
            if stopped:
                finish = "stop"
        if finish is None and row.generated >= row.max_tokens:
            finish = "length"
        if finish is not None:
            row.finished = True
            if not row.stops.stopped:
                tail, stopped = row.stops.push(row.detokenizer.finish())
                text += tail if stopped else tail + row.stops.flush()
                finish = "stop" if stopped else finish
        return TokenStep(row.choice, token, logprob, top, text, finish)


def _lora_signature(config: Any) -> Dict[str, Any]:
    """The parts of a LoRA config that decide which layers exist; equal signatures share layers."""
    targets = config.target_modules
    return {
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "target_modules": sorted(targets) if isinstance(targets, (set, list, tuple)) else targets,
        "bias": config.bias,
        "use_rslora": config.use_rslora,
        "use_dora": config.use_dora,
        "modules_to_save": config.modules_to_save,
        "rank_pattern": dict(config.rank_pattern or {}),
        "alpha_pattern": dict(config.alpha_pattern or {}),
    }


def _read_state_dict(path: Path) -> Dict[str, Any]:
    """Tensors from a weights file, or from every weights file of a folder."""
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
        if not files:
            raise ValueError(f"{path} holds no *.safetensors or pytorch_model*.bin file")
    elif path.is_file():
        files = [path]
    else:
        raise ValueError(f"{path} does not exist")
    state: Dict[str, Any] = {}
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state.update(load_file(str(file)))
        else:
            loaded = torch.load(str(file), map_location="cpu", weights_only=True)
            if not isinstance(loaded, dict):
                raise ValueError(f"{file} does not hold a state dict")
            state.update(loaded)
    return state
