"""The trainable policy: a causal LM (LoRA through PEFT, or all weights), its optimizer, the GRPO
update step, weight export for the serving backend, and checkpoints for resuming.

Why the update is written on torch + PEFT rather than run through TRL's ``GRPOTrainer`` (trl 1.16):

- **Who samples.** ``GRPOTrainer.train()`` owns the loop: it pulls prompts from its dataset, calls
  its generator (or the ``rollout_func(prompts, trainer)`` hook) synchronously inside each step, and
  then scores the result with its ``reward_funcs``. In Agent Lightning the agents run in their own
  processes or hosts, call the model through the proxy whenever their own code decides to, and the
  algorithm collects finished rollouts from the store. A ``rollout_func`` could block on the store,
  but the trainer would still fix the batch layout: one row per dataset prompt and generation, groups
  as consecutive slices of exactly ``num_generations`` rows (``rewards.view(-1, num_generations)``).
  A rollout that made several LLM calls whose prompts do not extend each other (several training
  sequences sharing one reward) does not fit one row. A failed rollout must still fill its row with
  some completion: TRL leaves a row whose reward functions all return None out of the group's mean
  and std and gives it advantage 0, but its tokens still count in the loss's token normalizer, and a
  rollout that failed before any LLM call has no tokens to put there.
- **Interleaved context tokens do fit.** ``rollout_func`` may return an ``env_mask`` per completion
  token (1 for model tokens, 0 for tool results and other environment tokens), which TRL multiplies
  into its loss mask, so a multi-turn trajectory that is a single extending token sequence can be
  expressed as ``prompt_ids`` + ``completion_ids`` + ``env_mask``.
- **Sampling logprobs are not the ratio's reference.** The ``logprobs`` that ``rollout_func``
  returns serve vLLM importance-sampling correction (``use_vllm=True``) and the optional off-policy
  sequence mask. The clipped ratio is taken against logprobs the trainer recomputes itself before
  the update (only when generation and optimizer steps are misaligned, or with vLLM), otherwise
  against the current logprobs detached, i.e. ratio 1: not against what the serving engine recorded
  when the agent sampled. Here the ratio is taken against the recorded logprobs, which is what bounds
  the update when runners sampled from an older policy (asynchronous rollouts).
- **Per-step work that is not ours.** TRL's step also decodes completions to text, applies chat
  templates and calls reward functions; Agent Lightning's rewards come from the agent's spans.

So the trainer is not used; the update below is a small loop on torch and PEFT. TRL's loss helpers
are not used either: the plugin would pull TRL (and its datasets/accelerate dependencies) for a few
lines of tensor math, and its fused LM head projects every position on machines without Triton,
where ours projects only the model tokens (``update.detect_logit_selection``). TRL remains the
reference that ``bench/grpo_bench.py`` compares against on the same model and batch.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch

from agentlightning.adapter.sequence import TokenSequence

from .batch import MicroBatch, PreparedBatch, build_micro_batches
from .config import GRPOConfig
from .run_log import STATE_FILE as _STATE_FILE
from .run_log import checkpoint_dir, latest_checkpoint
from .update import LogitSelection, clipped_policy_loss, detect_logit_selection, token_logprobs

__all__ = ["TrainablePolicy", "UpdateMetrics", "resolve_device", "checkpoint_dir", "latest_checkpoint"]

_DTYPES: Dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_CHECKPOINT_FORMAT = 1
_TRAINABLE_FILE = "trainable.safetensors"
_OPTIMIZER_FILE = "optimizer.pt"
# Config fields that decide the shapes of the saved tensors: a checkpoint only loads when they match.
_SHAPE_FIELDS = ("finetuning", "lora_r", "lora_target_modules")


def resolve_device(device: Optional[str] = None) -> torch.device:
    """The requested device, or cuda when available, else cpu."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class UpdateMetrics:
    """What one :meth:`TrainablePolicy.update` did. Losses and KL are token means over the step."""

    step: int
    loss: float
    pg_loss: float
    # Mean k3 KL to the reference over the model tokens (0.0 when beta == 0: not computed).
    kl: float
    clip_fraction: float
    ratio_mean: float
    entropy: float
    grad_norm: float
    learning_rate: float
    sequences: int
    micro_batches: int
    # Model tokens in the loss / real tokens read by the model / tokens including padding.
    loss_tokens: int
    tokens: int
    padded_tokens: int
    missing_logprob_tokens: int
    # Mean |sampling-time logprob - current logprob| before the update (sampler/trainer mismatch).
    sampling_logprob_diff: float
    truncated_sequences: int
    dropped_sequences: int
    step_time_s: float
    # Real tokens (prompt, model and context tokens; not padding) the model ran, per second of step time.
    tokens_per_s: float
    # True when there was no model token to train on: the weights and the step counter are unchanged.
    skipped: bool = False
    dropped_rollouts: List[str] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


class TrainablePolicy:
    """A causal language model being trained with GRPO.

    ``model`` is a transformers causal LM (e.g. from ``AutoModelForCausalLM``). With
    ``config.finetuning == "lora"`` it is wrapped with a fresh PEFT LoRA adapter and only the adapter
    is trained; the reference policy for the KL term is the same model with the adapter disabled,
    so no second copy is kept. With ``"full"`` every weight is trained, and a frozen copy is kept as
    the reference only when ``beta > 0``.
    """

    def __init__(self, model: torch.nn.Module, config: Optional[GRPOConfig] = None) -> None:
        self.config = config or GRPOConfig()
        self.device = resolve_device(self.config.device)
        self.dtype = _DTYPES[self.config.dtype]
        self.step = 0
        _seed_everything(self.config.seed)
        model = model.to(device=self.device, dtype=self.dtype)
        if self.config.gradient_checkpointing:
            hf_model: Any = model
            # Non-reentrant checkpointing needs no input that requires grad, which frozen LoRA bases lack.
            hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self._reference: Optional[torch.nn.Module] = None
        if self.config.finetuning == "lora":
            self.model = self._wrap_lora(model)
        else:
            self.model = model
            if self.config.beta > 0:
                self._reference = copy.deepcopy(model).eval().requires_grad_(False)
        self.model.train()
        self._trainable = [(name, param) for name, param in self.model.named_parameters() if param.requires_grad]
        if not self._trainable:
            raise ValueError("the model has no trainable parameters")
        self.optimizer = torch.optim.AdamW(
            [param for _, param in self._trainable],
            lr=self.config.learning_rate,
            betas=self.config.adam_betas,
            eps=self.config.adam_eps,
            weight_decay=self.config.weight_decay,
        )
        self.logit_selection: LogitSelection = detect_logit_selection(self.model)
        self.pad_token_id = _pad_token_id(self.model)

    @classmethod
    def from_pretrained(
        cls, path: Union[str, Path], config: Optional[GRPOConfig] = None, **model_kwargs: Any
    ) -> "TrainablePolicy":
        """Load a causal LM from a local folder (or hub id) with transformers and wrap it."""
        from transformers import AutoModelForCausalLM

        config = config or GRPOConfig()
        model_kwargs.setdefault("dtype", _DTYPES[config.dtype])
        model = AutoModelForCausalLM.from_pretrained(str(path), **model_kwargs)
        return cls(model, config)

    def _wrap_lora(self, model: torch.nn.Module) -> torch.nn.Module:
        from peft import LoraConfig, get_peft_model

        target_modules = self.config.lora_target_modules
        lora_config = LoraConfig(
            r=self.config.lora_r,
            lora_alpha=self.config.lora_alpha,
            lora_dropout=self.config.lora_dropout,
            target_modules=target_modules if isinstance(target_modules, str) else list(target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        try:
            peft_model: torch.nn.Module = get_peft_model(model, lora_config)
        except ValueError as exc:
            raise ValueError(f"cannot apply LoRA with lora_target_modules={target_modules!r}: {exc}") from exc
        return peft_model

    # ------------------------------------------------------------------ training

    @property
    def is_lora(self) -> bool:
        return self.config.finetuning == "lora"

    def prepare(self, sequences: Sequence[TokenSequence], advantages: Mapping[str, float]) -> PreparedBatch:
        """Truncate, pack and pad ``sequences`` into this policy's micro-batches (not yet on the device)."""
        return build_micro_batches(
            sequences,
            advantages,
            max_length=self.config.max_length,
            micro_batch_tokens=self.config.micro_batch_tokens,
            pad_token_id=self.pad_token_id,
        )

    def update(self, sequences: Sequence[TokenSequence], advantages: Mapping[str, float]) -> UpdateMetrics:
        """One optimizer step of GRPO on ``sequences`` (``advantages`` maps rollout id -> advantage).

        Gradients of all micro-batches are accumulated, so the step is one update on the token mean
        over every model token of every sequence given (see :mod:`agentlightning_grpo.update`).
        """
        started = time.perf_counter()
        prepared = self.prepare(sequences, advantages)
        total_loss_tokens = prepared.loss_tokens
        if total_loss_tokens == 0:
            warnings.warn(
                f"no model token to train on among {len(sequences)} sequence(s); the policy is unchanged",
                stacklevel=2,
            )
            return self._metrics(prepared, {}, grad_norm=0.0, started=started, skipped=True)

        trained = prepared
        if self.config.beta == 0:
            # Without a KL term a sequence whose advantage is 0 adds nothing to the gradient (its clipped
            # terms are 0), only tokens to the count N that divides it: skip its forward and backward.
            trained = self.prepare(sequences, {key: value for key, value in advantages.items() if value != 0.0})

        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums: Dict[str, torch.Tensor] = {}
        for micro_batch in trained.micro_batches:
            batch = micro_batch.to(self.device)
            ref_logprobs = self._reference_logprobs(batch) if self.config.beta > 0 else None
            logprobs, entropy = token_logprobs(
                self.model,
                batch,
                selection=self.logit_selection,
                temperature=self.config.temperature,
                with_entropy=True,
            )
            terms = clipped_policy_loss(
                logprobs,
                batch,
                clip_eps_low=self.config.clip_eps_low,
                clip_eps_high=self.config.clip_eps_high,
                ref_logprobs=ref_logprobs,
                beta=self.config.beta,
            )
            (terms.loss_sum / total_loss_tokens).backward()
            micro_sums = {
                "loss": terms.loss_sum.detach(),
                "pg_loss": terms.pg_loss_sum,
                "kl": terms.kl_sum,
                "ratio": terms.ratio_sum,
                "clipped": terms.clipped_tokens,
                "missing": terms.missing_logprob_tokens,
                "diff": terms.abs_logprob_diff_sum,
                "known": terms.known_logprob_tokens,
                "entropy": entropy.sum() if entropy is not None else torch.zeros(()),
            }
            for key, value in micro_sums.items():
                sums[key] = sums[key] + value.float() if key in sums else value.float()

        params = [param for _, param in self._trainable]
        for param in params:
            if param.grad is None:  # nothing informative ran: Adam still takes its (momentum) step
                param.grad = torch.zeros_like(param)
        if self.config.max_grad_norm is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        else:
            grad_norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None])
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        values = {key: float(value.item()) for key, value in sums.items()}
        return self._metrics(prepared, values, grad_norm=float(grad_norm.item()), started=started, trained=trained)

    def _reference_logprobs(self, batch: MicroBatch) -> torch.Tensor:
        with torch.no_grad():
            if self._reference is not None:
                logprobs, _ = token_logprobs(
                    self._reference, batch, selection=self.logit_selection, temperature=self.config.temperature
                )
                return logprobs
            # LoRA: the reference is the base model, i.e. this model with its adapter switched off.
            peft_model: Any = self.model
            with peft_model.disable_adapter():
                logprobs, _ = token_logprobs(
                    self.model, batch, selection=self.logit_selection, temperature=self.config.temperature
                )
            return logprobs

    def _metrics(
        self,
        prepared: PreparedBatch,
        sums: Mapping[str, float],
        *,
        grad_norm: float,
        started: float,
        skipped: bool = False,
        trained: Optional[PreparedBatch] = None,
    ) -> UpdateMetrics:
        elapsed = time.perf_counter() - started
        loss_tokens = prepared.loss_tokens
        per_token = 1.0 / loss_tokens if loss_tokens else 0.0
        # Ratio, clipping and entropy are means over the tokens that went through the model.
        ran = (trained or prepared).loss_tokens
        per_run_token = 1.0 / ran if ran else 0.0
        known = sums.get("known", 0.0)
        return UpdateMetrics(
            step=self.step,
            loss=sums.get("loss", 0.0) * per_token,
            pg_loss=sums.get("pg_loss", 0.0) * per_token,
            kl=sums.get("kl", 0.0) * per_token,
            clip_fraction=sums.get("clipped", 0.0) * per_run_token,
            ratio_mean=sums.get("ratio", 0.0) * per_run_token,
            entropy=sums.get("entropy", 0.0) * per_run_token,
            grad_norm=grad_norm,
            learning_rate=float(self.optimizer.param_groups[0]["lr"]),
            sequences=prepared.sequences,
            micro_batches=len((trained or prepared).micro_batches),
            loss_tokens=loss_tokens,
            tokens=prepared.tokens,
            padded_tokens=prepared.padded_tokens,
            missing_logprob_tokens=int(sums.get("missing", 0.0)),
            sampling_logprob_diff=sums.get("diff", 0.0) / known if known else 0.0,
            truncated_sequences=len(prepared.truncated),
            dropped_sequences=len(prepared.dropped),
            step_time_s=elapsed,
            tokens_per_s=(trained or prepared).tokens / elapsed if elapsed > 0 else 0.0,
            skipped=skipped,
            dropped_rollouts=list(prepared.dropped),
        )

    # ------------------------------------------------------------------ scoring

    def token_logprobs(self, sequences: Sequence[TokenSequence]) -> List[List[Optional[float]]]:
        """Current logprob of every model token of each sequence, aligned like ``TokenSequence.logprobs``
        (None on context tokens and on tokens cut by ``max_length``). No gradient, no state change."""
        # Score in micro-batches like the update; the index stands in for the rollout id, which
        # several sequences of one rollout share.
        indexed = [sequence.model_copy(update={"rollout_id": str(i)}) for i, sequence in enumerate(sequences)]
        prepared = self.prepare(indexed, {str(i): 0.0 for i in range(len(indexed))})
        results: List[List[Optional[float]]] = [[None] * len(sequence.token_ids) for sequence in sequences]
        was_training = self.model.training
        self.model.eval()
        try:
            for micro_batch in prepared.micro_batches:
                batch = micro_batch.to(self.device)
                with torch.no_grad():
                    logprobs, _ = token_logprobs(
                        self.model, batch, selection=self.logit_selection, temperature=self.config.temperature
                    )
                rows = logprobs.float().cpu().tolist()
                masks = (batch.loss_mask > 0).cpu().tolist()
                for index, row, mask in zip(micro_batch.rollout_ids, rows, masks, strict=True):
                    scores = results[int(index)]
                    for column, is_model_token in enumerate(mask):
                        if is_model_token:
                            scores[column + 1] = row[column]
        finally:
            self.model.train(was_training)
        return results

    # ------------------------------------------------------------------ export

    def adapter_state_dict(self) -> Dict[str, torch.Tensor]:
        """The LoRA adapter's weights (PEFT naming, as in ``adapter_model.safetensors``), on the cpu."""
        self._require_lora("adapter_state_dict")
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(self.model)
        return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}

    def export_adapter(self, path: Union[str, Path]) -> Path:
        """Write the LoRA adapter as a PEFT folder (``adapter_config.json`` + ``adapter_model.safetensors``)
        that vLLM (``--enable-lora``) or ``PeftModel.from_pretrained`` loads."""
        self._require_lora("export_adapter")
        target = Path(path)
        target.mkdir(parents=True, exist_ok=True)
        peft_model: Any = self.model
        peft_model.save_pretrained(str(target))
        return target

    def merged_state_dict(self) -> Dict[str, torch.Tensor]:
        """Full weights under the base model's parameter names, with the LoRA update folded in.

        Computed out of place (W + scaling * B @ A per adapted layer), so the training weights are
        never merged and unmerged, which would drift in low precision over many steps.
        """
        base = self._base_model()
        if not self.is_lora:
            return {name: tensor.detach() for name, tensor in base.state_dict().items()}
        from peft.tuners.lora import LoraLayer

        deltas: Dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name, module in base.named_modules():
                if isinstance(module, LoraLayer):
                    key = f"{name}.weight"
                    lora_module: Any = module  # the concrete layer types (Linear, Embedding, ...) define it
                    for adapter in lora_module.active_adapters:
                        delta = lora_module.get_delta_weight(adapter)
                        deltas[key] = deltas[key] + delta if key in deltas else delta
            merged: Dict[str, torch.Tensor] = {}
            for key, tensor in base.state_dict().items():
                if ".lora_" in key:
                    continue
                clean = key.replace(".base_layer.", ".")
                delta = deltas.get(clean)
                merged[clean] = (tensor + delta.to(tensor.dtype)) if delta is not None else tensor.detach()
        return merged

    def export_full_model(self, path: Union[str, Path], tokenizer: Any = None) -> Path:
        """Write a plain transformers model folder (config + safetensors; LoRA merged in) that any
        serving backend loads as a regular model. ``tokenizer``, when given, is saved beside it."""
        target = Path(path)
        target.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu() for name, tensor in self.merged_state_dict().items()}
        # The base model's own save (its config, its tied-weight handling) with the merged weights.
        self._base_model().save_pretrained(str(target), state_dict=state)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(target))
        return target

    def frozen_base_weights(self) -> Dict[str, torch.Tensor]:
        """LoRA only: the frozen base model's tensors (not copies) under the plain model's parameter names.

        Training never writes them, so a serving engine on the same device and dtype may use them in
        place of its own copy (the embedded serving backend's ``share_base_weights`` does).
        """
        self._require_lora("frozen_base_weights")
        return {
            name.replace(".base_layer.", "."): param.data
            for name, param in self._base_model().named_parameters()
            if ".lora_" not in name
        }

    def _base_model(self) -> Any:
        model: Any = self.model
        return model.get_base_model() if self.is_lora else model

    def _require_lora(self, what: str) -> None:
        if not self.is_lora:
            raise ValueError(f"{what} needs finetuning='lora'; use merged_state_dict()/export_full_model() instead")

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, path: Union[str, Path], extra_state: Optional[Mapping[str, Any]] = None) -> Path:
        """Write trainable weights, optimizer state, RNG state, step, config and ``extra_state`` (any
        JSON-able data of the caller, e.g. the loop's position) to the folder ``path``.

        The folder appears complete or not at all: it is written beside the target and renamed.
        """
        from safetensors.torch import save_file

        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        tensors = {name: param.detach().to("cpu").contiguous() for name, param in self._trainable}
        save_file(tensors, str(staging / _TRAINABLE_FILE))
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "python_rng": random.getstate(),
            },
            staging / _OPTIMIZER_FILE,
        )
        state = {
            "format": _CHECKPOINT_FORMAT,
            "step": self.step,
            "config": self.config.model_dump(mode="json"),
            "extra": dict(extra_state or {}),
        }
        (staging / _STATE_FILE).write_text(json.dumps(state, indent=2))
        if target.exists():
            previous = target.parent / f".{target.name}.old-{os.getpid()}"
            target.rename(previous)
            staging.rename(target)
            shutil.rmtree(previous)
        else:
            staging.rename(target)
        return target

    def load_checkpoint(self, path: Union[str, Path]) -> Dict[str, Any]:
        """Restore what :meth:`save_checkpoint` wrote; returns its ``extra_state``.

        Raises ``ValueError`` naming the field when the checkpoint was written with a different
        finetuning mode or LoRA shape, and ``FileNotFoundError`` for an incomplete folder.
        """
        from safetensors.torch import load_file

        source = Path(path)
        for name in (_STATE_FILE, _TRAINABLE_FILE, _OPTIMIZER_FILE):
            if not (source / name).is_file():
                raise FileNotFoundError(f"{source} is not a complete checkpoint: {name} is missing")
        state = json.loads((source / _STATE_FILE).read_text())
        if state.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(f"{source}: unsupported checkpoint format {state.get('format')!r}")
        saved_config = state.get("config", {})
        current_config = self.config.model_dump(mode="json")
        for key in _SHAPE_FIELDS:
            if saved_config.get(key) != current_config.get(key):
                raise ValueError(
                    f"{source} was saved with {key}={saved_config.get(key)!r}, "
                    f"this policy has {key}={current_config.get(key)!r}"
                )
        tensors = load_file(str(source / _TRAINABLE_FILE), device=str(self.device))
        expected = {name for name, _ in self._trainable}
        if set(tensors) != expected:
            missing = sorted(expected - set(tensors))[:5]
            unexpected = sorted(set(tensors) - expected)[:5]
            raise ValueError(f"{source}: weights do not match this model (missing {missing}, unexpected {unexpected})")
        with torch.no_grad():
            for name, param in self._trainable:
                param.copy_(tensors[name].to(param.dtype))
        saved = torch.load(source / _OPTIMIZER_FILE, map_location=self.device, weights_only=False)
        self.optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"].cpu())
        if saved.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([state.cpu() for state in saved["cuda_rng"]])
        random.setstate(saved["python_rng"])
        self.step = int(state["step"])
        extra: Dict[str, Any] = state.get("extra", {})
        return extra


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _pad_token_id(model: torch.nn.Module) -> int:
    # Padding is masked out of attention and loss, so any id in the vocabulary will do.
    config = getattr(model, "config", None)
    for attribute in ("pad_token_id", "eos_token_id"):
        value = getattr(config, attribute, None)
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, int) and value >= 0:
            return value
    return 0
