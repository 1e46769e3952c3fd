"""The model SFT trains: TRL's ``SFTTrainer`` on one round's records, with a PEFT LoRA adapter (or all weights)
kept across rounds; weights for the serving backend, and checkpoints for resuming.

Only glue lives here: records become a ``datasets.Dataset`` in a format ``SFTTrainer`` tokenizes and
masks itself (conversational prompt-completion for chat records: loss on the answer; pre-tokenized
``input_ids`` + ``completion_mask`` for token records: loss on the model's own tokens), and
``SFTTrainer.train()`` does the rest. Each round builds a new trainer (and optimizer) on the same
model, so the adapter keeps learning from round to round.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import torch

from agentlightning_grpo.run_log import STATE_FILE as _STATE_FILE

from .config import SFTConfig
from .records import to_trl_example

__all__ = ["RoundTraining", "SFTLearner"]

_DTYPES: Dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_CHECKPOINT_FORMAT = 1
# Config fields that decide the shapes of the saved weights: a checkpoint only loads when they match.
_SHAPE_FIELDS = ("finetuning", "lora_r", "lora_target_modules")


@dataclass
class RoundTraining:
    """What one round's ``SFTTrainer.train()`` did."""

    records: int
    optimizer_steps: int
    loss: float
    # Tokens the model read (prompt and answer, after truncation) and those in the loss, over all epochs.
    tokens: int
    loss_tokens: int
    train_seconds: float
    tokens_per_s: float

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


class SFTLearner:
    """A causal LM and its tokenizer, fine-tuned round after round with TRL's ``SFTTrainer``."""

    def __init__(self, model: Any, tokenizer: Any, config: Optional[SFTConfig] = None) -> None:
        self.config = config or SFTConfig()
        device = self.config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)
        model = model.to(device=self.device, dtype=_DTYPES[self.config.dtype])
        self.model = self._wrap_lora(model) if self.is_lora else model
        self.tokenizer = tokenizer
        self.round = 0

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], config: Optional[SFTConfig] = None) -> "SFTLearner":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        config = config or SFTConfig()
        with _quiet():
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=_DTYPES[config.dtype])
            return cls(model, AutoTokenizer.from_pretrained(str(path)), config)

    @property
    def is_lora(self) -> bool:
        return self.config.finetuning == "lora"

    def _wrap_lora(self, model: Any) -> Any:
        from peft import LoraConfig, get_peft_model

        targets = self.config.lora_target_modules
        lora = LoraConfig(
            r=self.config.lora_r,
            lora_alpha=self.config.lora_alpha,
            lora_dropout=self.config.lora_dropout,
            target_modules=targets if isinstance(targets, str) else list(targets),
            bias="none",
            task_type="CAUSAL_LM",
        )
        try:
            with warnings.catch_warnings():  # peft reads a deprecated transformers property
                warnings.simplefilter("ignore", FutureWarning)
                return get_peft_model(model, lora)
        except ValueError as exc:
            raise ValueError(f"cannot apply LoRA with lora_target_modules={targets!r}: {exc}") from exc

    # ------------------------------------------------------------------------------ training

    def dataset(self, records: Sequence[Mapping[str, Any]]) -> Any:
        """The ``datasets.Dataset`` that ``SFTTrainer`` gets for ``records`` (chat or token records)."""
        from datasets import Dataset

        if self.config.record_format == "tokens":
            rows: List[Dict[str, Any]] = [
                {"input_ids": list(r["input_ids"]), "completion_mask": list(r["completion_mask"])} for r in records
            ]
        else:
            rows = [to_trl_example(r) for r in records]
        return Dataset.from_list(rows)

    def trl_arguments(self, output_dir: Union[str, Path], round_index: int) -> Any:
        """TRL's ``SFTConfig`` of a round; ``config.trl_options`` override these defaults."""
        from trl import SFTConfig as TRLSFTConfig

        config = self.config
        options: Dict[str, Any] = {
            "output_dir": str(output_dir),
            "learning_rate": config.learning_rate,
            "num_train_epochs": config.epochs,
            "per_device_train_batch_size": config.batch_size,
            "gradient_accumulation_steps": config.gradient_accumulation_steps,
            "lr_scheduler_type": config.lr_scheduler_type,
            "weight_decay": config.weight_decay,
            "max_grad_norm": config.max_grad_norm,
            "max_length": config.max_length,
            # Loss on the answer (chat) or on the model's tokens (token records), never on the context.
            "completion_only_loss": True,
            "gradient_checkpointing": config.gradient_checkpointing,
            # TRL defaults to bf16 autocast; the weights' dtype is our config's choice instead.
            "bf16": False,
            "fp16": False,
            "use_cpu": self.device.type == "cpu",
            # A different but reproducible shuffle per round.
            "seed": config.seed + round_index,
            "data_seed": config.seed + round_index,
            "save_strategy": "no",
            "report_to": [],
            # The run prints one line per round; TRL's per-step log lines and progress bars stay out of it.
            "logging_strategy": "no",
            "disable_tqdm": True,
            "dataset_num_proc": None,
        }
        options.update(config.trl_options)
        return TRLSFTConfig(**options)

    def _trainer(self, records: Sequence[Mapping[str, Any]], round_index: int, work_dir: Union[str, Path]) -> Any:
        from transformers import PrinterCallback
        from trl import SFTTrainer

        trainer = SFTTrainer(
            model=self.model,
            args=self.trl_arguments(work_dir, round_index),
            train_dataset=self.dataset(records),
            processing_class=self.tokenizer,
        )
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict
        return trainer

    def prepared_dataset(self, records: Sequence[Mapping[str, Any]], work_dir: Union[str, Path]) -> Any:
        """What ``SFTTrainer`` trains on for ``records``: ``input_ids`` and ``labels`` (-100 off the loss)."""
        with _quiet():
            return self._trainer(records, self.round + 1, work_dir).train_dataset

    def train(
        self, records: Sequence[Mapping[str, Any]], round_index: int, work_dir: Union[str, Path]
    ) -> RoundTraining:
        """One round: ``SFTTrainer`` over ``records`` on the current model; the model keeps what it learned."""
        if not records:
            raise ValueError("a round needs at least one record to train on")
        with _quiet():
            trainer = self._trainer(records, round_index, work_dir)
            started = time.perf_counter()
            output = trainer.train()
            elapsed = time.perf_counter() - started
        prepared = trainer.train_dataset
        epochs = self.config.epochs
        tokens = int(sum(len(ids) for ids in prepared["input_ids"]) * epochs)
        loss_tokens = int(sum(sum(label != -100 for label in labels) for labels in prepared["labels"]) * epochs)
        self.model = trainer.model  # the same module (TRL does not copy a model it is given)
        self.model.eval()
        self.round = round_index
        return RoundTraining(
            records=len(records),
            optimizer_steps=int(output.global_step),
            loss=float(output.training_loss),
            tokens=tokens,
            loss_tokens=loss_tokens,
            train_seconds=elapsed,
            tokens_per_s=tokens / elapsed if elapsed > 0 else 0.0,
        )

    # ------------------------------------------------------------------------------- serving

    def push(self, server: Any, folder: Union[str, Path]) -> int:
        """Serve the current weights: in memory when ``server`` takes state dicts, else through ``folder``."""
        if self.is_lora:
            if server.accepts_state_dicts:
                from peft import get_peft_model_state_dict

                state = {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(self.model).items()}
                return int(server.load_lora(state, self.model.peft_config["default"]))
            self.model.save_pretrained(str(folder))
            return int(server.load_lora(str(folder)))
        if server.accepts_state_dicts:
            return int(server.load_weights({k: v.detach() for k, v in self.model.state_dict().items()}))
        self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))
        return int(server.load_weights(str(folder)))

    # ---------------------------------------------------------------------------- checkpoints

    def save_checkpoint(self, path: Union[str, Path]) -> Path:
        """The trained weights (the LoRA adapter, or the whole model and tokenizer) and the round, written
        beside ``path`` and renamed, so a checkpoint folder is complete or absent."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        self.model.save_pretrained(str(staging))
        if not self.is_lora:
            self.tokenizer.save_pretrained(str(staging))
        state = {"format": _CHECKPOINT_FORMAT, "round": self.round, "config": self.config.model_dump(mode="json")}
        (staging / _STATE_FILE).write_text(json.dumps(state, indent=2))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        return target

    def load_checkpoint(self, path: Union[str, Path]) -> int:
        """Restore the weights of :meth:`save_checkpoint`; returns its round. ``ValueError`` names a
        mismatching shape field (finetuning, LoRA rank or targets)."""
        source = Path(path)
        state = json.loads((source / _STATE_FILE).read_text())
        if state.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(f"{source}: unsupported checkpoint format {state.get('format')!r}")
        saved, current = state.get("config", {}), self.config.model_dump(mode="json")
        for key in _SHAPE_FIELDS:
            if saved.get(key) != current.get(key):
                raise ValueError(f"{source} was saved with {key}={saved.get(key)!r}, this run has {current.get(key)!r}")
        if self.is_lora:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            weights = load_file(str(source / "adapter_model.safetensors"), device=str(self.device))
            result = set_peft_model_state_dict(self.model, weights)
            if getattr(result, "unexpected_keys", None):
                raise ValueError(f"{source}: adapter weights do not match this model: {result.unexpected_keys[:5]}")
        else:
            from transformers import AutoModelForCausalLM

            loaded = AutoModelForCausalLM.from_pretrained(str(source), dtype=_DTYPES[self.config.dtype])
            self.model = loaded.to(self.device)
        self.round = int(state["round"])
        return self.round


@contextmanager
def _quiet() -> Iterator[None]:
    """The run prints its own progress: no dataset progress bars, library notices or deprecation warnings."""
    import datasets
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    transformers_bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()
        if transformers_bars:
            transformers_logging.enable_progress_bar()
