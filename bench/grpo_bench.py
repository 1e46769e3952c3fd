"""GRPO update throughput: ``agentlightning_grpo`` against TRL's ``GRPOTrainer``, same model, same batch.

Both sides train the same tiny Qwen2 (created from a config, same initial weights) on the same batch:
``--batch`` sequences of ``--prompt`` prompt tokens + ``--completion`` completion tokens (2 tasks x
``batch / 2`` completions each, fixed random token ids and rewards), float32, LoRA on both sides
(``--finetuning lora``, r/alpha/targets identical) or all weights on both (``full``), beta = 0, clip
eps 0.2, token-mean loss (TRL's default ``loss_type="dapo"``), grad-norm clipping at 1.0, AdamW,
one optimizer step per batch. The figure is **tokens per second of one update step**, counting every
real token the model reads (prompt + completion, ``batch x (prompt + completion)`` per step).

What is timed:

- **ours**: one ``TrainablePolicy.update(sequences, advantages)`` call, the whole of it: building the
  padded tensors from the ``TokenSequence`` lists, forward, loss, backward, grad clipping, AdamW.
  The sequences carry sampling-time logprobs (the ratio is taken against them).
- **TRL (policy-gradient part)**: from the ``on_step_begin`` callback to ``on_step_end`` of its
  ``Trainer`` loop (forward + loss + backward in ``training_step``, grad clipping, AdamW, scheduler,
  ``zero_grad``) **minus** the time spent in ``GRPOTrainer._prepare_inputs``, which is where TRL
  produces the batch: its ``rollout_func`` returns the fixed precomputed completions at once (no
  generation), then it decodes them, calls the reward function, computes advantages and pads. So
  TRL is not charged for building its tensors while ours is (a conservative comparison).
- **TRL (whole step)** is reported too: the same interval without subtracting ``_prepare_inputs``.

The two sides alternate step by step (TRL step, ours step, TRL step, ...: ours runs from TRL's
``on_step_end`` callback, after TRL's interval is taken) so a change in machine load hits both alike.
Every block starts both sides afresh from the same initial weights; the first ``--warmup`` steps of
every block are not timed; figures are medians over all timed steps. The load average before and after is printed and stored: on a shared 2-core machine, compare
figures only within one run.

    nox -s bench_grpo                       # installs torch (pip), trl, core and plugins/grpo; --json
    python bench/grpo_bench.py --finetuning full --steps 8
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_RATIO = 1.0
GROUPS = 2


def parse_args(argv: List[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=8, help="sequences per step (two tasks, half each)")
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens per sequence")
    parser.add_argument("--completion", type=int, default=192, help="completion tokens per sequence")
    parser.add_argument("--finetuning", choices=["lora", "full", "both"], default="lora")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per block")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of every block")
    parser.add_argument("--blocks", type=int, default=2, help="fresh starts of both sides")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (same for both sides)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", nargs="?", const="", default=None, metavar="PATH", help="write results as JSON")
    parser.add_argument("--check", action="store_true", help=f"exit 1 when ours/TRL < {TARGET_RATIO}")
    args = parser.parse_args(argv)
    if args.batch % GROUPS:
        parser.error(f"--batch must be a multiple of {GROUPS}")
    return args


def make_model(args: argparse.Namespace) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 4,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=args.vocab,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(args.seed)
    return Qwen2ForCausalLM(config)


def make_workload(args: argparse.Namespace) -> Dict[str, Any]:
    """Fixed token ids and rewards: GROUPS tasks, batch / GROUPS completions of each."""
    import torch

    generator = torch.Generator().manual_seed(args.seed + 1)
    per_group = args.batch // GROUPS
    prompts = [torch.randint(2, args.vocab, (args.prompt,), generator=generator).tolist() for _ in range(GROUPS)]
    completions = [
        [torch.randint(2, args.vocab, (args.completion,), generator=generator).tolist() for _ in range(per_group)]
        for _ in range(GROUPS)
    ]
    # Distinct rewards in every group, so every sequence has a nonzero advantage on both sides.
    rewards = [[float((index * 7 + group * 3) % per_group) for index in range(per_group)] for group in range(GROUPS)]
    return {"prompts": prompts, "completions": completions, "rewards": rewards}


def load_average() -> List[float]:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------- ours


def make_ours(args: argparse.Namespace, model: Any, workload: Dict[str, Any], finetuning: str) -> Callable[[], float]:
    """Return a function that runs one update step of ours and returns its duration."""
    from agentlightning.adapter.sequence import TokenSequence
    from agentlightning_grpo import GRPOConfig, RolloutReward, TrainablePolicy, compute_group_advantages

    length = args.prompt + args.completion
    config = GRPOConfig(
        finetuning=finetuning,
        learning_rate=1e-5,
        beta=0.0,
        clip_eps_low=0.2,
        clip_eps_high=0.2,
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        lora_dropout=0.0,
        lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        max_length=length,
        micro_batch_tokens=args.batch * length,
        max_grad_norm=1.0,
        dtype="float32",
        device="cpu",
        seed=args.seed,
    )
    policy = TrainablePolicy(model, config)
    sequences: List[TokenSequence] = []
    rewards: List[RolloutReward] = []
    for group, prompt in enumerate(workload["prompts"]):
        for index, completion in enumerate(workload["completions"][group]):
            rollout_id = f"task{group}-{index}"
            sequences.append(
                TokenSequence(
                    rollout_id=rollout_id,
                    token_ids=prompt + completion,
                    loss_mask=[0] * len(prompt) + [1] * len(completion),
                    logprobs=[None] * length,
                    prompt_length=len(prompt),
                )
            )
            rewards.append(RolloutReward(rollout_id, f"task{group}", workload["rewards"][group][index]))
    # Sampling-time logprobs, as the serving engine would have recorded them from the initial policy.
    scored = policy.token_logprobs(sequences)
    sequences = [s.model_copy(update={"logprobs": lp}) for s, lp in zip(sequences, scored, strict=True)]
    advantages = compute_group_advantages(rewards).advantages

    def step() -> float:
        metrics = policy.update(sequences, advantages)
        if metrics.tokens != args.batch * length:
            raise RuntimeError(f"ours trained on {metrics.tokens} tokens, expected {args.batch * length}")
        return metrics.step_time_s

    return step


# ---------------------------------------------------------------------------------------------- TRL


def make_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer whose every id decodes (TRL decodes completions for its reward functions)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{index}": index for index in range(vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t2"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="t0", eos_token="t1", unk_token="t2")


def run_block(
    args: argparse.Namespace,
    model: Any,
    workload: Dict[str, Any],
    finetuning: str,
    output_dir: str,
    ours_step: Callable[[], float],
) -> Dict[str, List[float]]:
    """Train TRL's GRPOTrainer for warmup + steps steps, running one step of ours after each of its
    steps (outside TRL's timed interval); return the timed steps of both (TRL: whole and PG part)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    per_group = args.batch // GROUPS
    prompt_texts = [f"task{group}" for group in range(GROUPS)]
    # Each call gets the batch's prompts, each repeated per_group times; hand out that task's completions in turn.
    served: Dict[str, int] = {}

    def rollout_func(prompts: List[Any], trainer: Any) -> Dict[str, List[Any]]:
        prompt_ids, completion_ids, logprobs, reward_values = [], [], [], []
        for prompt in prompts:
            group = prompt_texts.index(prompt)
            index = served.get(prompt, 0) % per_group
            served[prompt] = index + 1
            completion = workload["completions"][group][index]
            prompt_ids.append(workload["prompts"][group])
            completion_ids.append(completion)
            logprobs.append([0.0] * len(completion))
            reward_values.append(workload["rewards"][group][index])
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": completion_ids,
            "logprobs": logprobs,
            "reward_value": reward_values,
        }

    def reward_func(
        prompts: List[Any], completions: List[Any], reward_value: List[float], **_: Any
    ) -> List[Optional[float]]:
        return list(reward_value)

    total_steps = args.warmup + args.steps
    config = TRLConfig(
        output_dir=output_dir,
        use_cpu=True,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        num_generations=per_group,
        max_completion_length=args.completion,
        beta=0.0,
        epsilon=0.2,
        learning_rate=1e-5,
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        max_steps=total_steps,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=args.seed,
        dataloader_num_workers=0,
        bf16=False,
    )
    peft_config = None
    if finetuning == "lora":
        peft_config = LoraConfig(
            r=args.lora_r,
            lora_alpha=2 * args.lora_r,
            lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            bias="none",
            task_type="CAUSAL_LM",
        )
    dataset = Dataset.from_dict({"prompt": prompt_texts * (total_steps * args.batch)})
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_func,
        args=config,
        train_dataset=dataset,
        processing_class=make_tokenizer(args.vocab),
        peft_config=peft_config,
        rollout_func=rollout_func,
    )

    prepare_time = [0.0]
    original_prepare = trainer._prepare_inputs

    def timed_prepare(*prepare_args: Any, **prepare_kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original_prepare(*prepare_args, **prepare_kwargs)
        finally:
            prepare_time[0] += time.perf_counter() - started

    trainer._prepare_inputs = timed_prepare  # type: ignore[method-assign]
    whole: List[float] = []
    policy_gradient: List[float] = []
    ours: List[float] = []

    class StepTimer(TrainerCallback):
        started = 0.0

        def on_step_begin(self, *_: Any, **__: Any) -> None:
            prepare_time[0] = 0.0
            self.started = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            elapsed = time.perf_counter() - self.started
            whole.append(elapsed)
            policy_gradient.append(elapsed - prepare_time[0])
            # Alternate step by step, so a change in machine load hits both sides alike.
            ours.append(ours_step())

    trainer.add_callback(StepTimer())
    trainer.remove_callback(PrinterCallback)  # it prints a metrics dict at the end of every block
    trainer.train()
    if len(whole) != total_steps:
        raise RuntimeError(f"TRL ran {len(whole)} steps, expected {total_steps}")
    return {
        "ours": ours[args.warmup :],
        "trl_whole": whole[args.warmup :],
        "trl_policy_gradient": policy_gradient[args.warmup :],
    }


# ---------------------------------------------------------------------------------------------- main


def summarize(times: List[float], tokens_per_step: int) -> Dict[str, Any]:
    median = statistics.median(times)
    return {
        "steps": len(times),
        "median_step_s": median,
        "best_step_s": min(times),
        "median_tokens_per_s": tokens_per_step / median,
        "best_tokens_per_s": tokens_per_step / min(times),
        "step_times_s": times,
    }


def measure(args: argparse.Namespace, finetuning: str) -> Dict[str, Any]:
    import torch

    tokens_per_step = args.batch * (args.prompt + args.completion)
    initial = make_model(args)
    workload = make_workload(args)
    ours_times: List[float] = []
    trl_whole: List[float] = []
    trl_pg: List[float] = []
    with tempfile.TemporaryDirectory(prefix="agl-grpo-bench-") as output_dir:
        for block in range(args.blocks):
            ours_step = make_ours(args, copy.deepcopy(initial), workload, finetuning)
            block_times = run_block(args, copy.deepcopy(initial), workload, finetuning, output_dir, ours_step)
            ours_times += block_times["ours"]
            trl_whole += block_times["trl_whole"]
            trl_pg += block_times["trl_policy_gradient"]
            print(
                f"  [{finetuning}] block {block + 1}/{args.blocks}: "
                f"ours {statistics.median(block_times['ours']):.3f} s/step, "
                f"TRL {statistics.median(block_times['trl_policy_gradient']):.3f} s/step (PG part), "
                f"{statistics.median(block_times['trl_whole']):.3f} s/step (whole); load {load_average()}",
                flush=True,
            )
    ours = summarize(ours_times, tokens_per_step)
    trl_policy_gradient = summarize(trl_pg, tokens_per_step)
    trl_whole_step = summarize(trl_whole, tokens_per_step)
    trainable = f"LoRA r={args.lora_r} on q,k,v,o" if finetuning == "lora" else "all weights"
    return {
        "finetuning": finetuning,
        "trainable": trainable,
        "torch_threads": torch.get_num_threads(),
        "ours": ours,
        "trl_policy_gradient": trl_policy_gradient,
        "trl_whole_step": trl_whole_step,
        "ratio_vs_trl_policy_gradient": ours["median_tokens_per_s"] / trl_policy_gradient["median_tokens_per_s"],
        "ratio_vs_trl_whole_step": ours["median_tokens_per_s"] / trl_whole_step["median_tokens_per_s"],
        # Each timed step of ours against the TRL step just before it: robust to slow load drifts.
        "paired_ratio_median": statistics.median(trl / own for trl, own in zip(trl_pg, ours_times, strict=True)),
    }


def table(results: List[Dict[str, Any]]) -> str:
    header = f"{'finetuning':<10} {'system':<26} {'median tok/s':>12} {'best tok/s':>11} {'s/step':>8} {'ours/x':>7}"
    rows = [header, "-" * len(header)]
    for result in results:
        ours_rate = result["ours"]["median_tokens_per_s"]
        for label, key in (
            ("ours (update)", "ours"),
            ("TRL (policy-gradient part)", "trl_policy_gradient"),
            ("TRL (whole step)", "trl_whole_step"),
        ):
            figures = result[key]
            ratio = ours_rate / figures["median_tokens_per_s"]
            rows.append(
                f"{result['finetuning']:<10} {label:<26} {figures['median_tokens_per_s']:>12.0f} "
                f"{figures['best_tokens_per_s']:>11.0f} {figures['median_step_s']:>8.3f} {ratio:>6.2f}x"
            )
    return "\n".join(rows)


def main(argv: List[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    import torch
    import transformers
    import trl

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    modes = ["lora", "full"] if args.finetuning == "both" else [args.finetuning]
    load_before = load_average()
    print(
        f"GRPO update throughput: tiny Qwen2 hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}; "
        f"batch {args.batch} x ({args.prompt} prompt + {args.completion} completion) tokens; float32; "
        f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}; "
        f"{args.threads} thread(s); load average {load_before}",
        flush=True,
    )
    results = [measure(args, mode) for mode in modes]
    load_after = load_average()
    print()
    print(table(results))
    print(f"\nload average before {load_before}, after {load_after}")
    below = [r for r in results if r["ratio_vs_trl_policy_gradient"] < TARGET_RATIO]
    for result in results:
        verdict = "ok" if result["ratio_vs_trl_policy_gradient"] >= TARGET_RATIO else "BELOW TARGET"
        print(
            f"{result['finetuning']}: ours/TRL (policy-gradient part) = {result['ratio_vs_trl_policy_gradient']:.2f}x "
            f"(target >= {TARGET_RATIO:g}x): {verdict}; median of step-by-step ratios {result['paired_ratio_median']:.2f}x"
        )

    if args.json is not None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = Path(args.json) if args.json else RESULTS_DIR / f"grpo_bench-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "benchmark": "grpo",
            "time": stamp,
            "machine": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "load_average_before": load_before,
                "load_average_after": load_after,
            },
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
            "workload": {
                "model": {"hidden": args.hidden, "layers": args.layers, "vocab": args.vocab},
                "batch": args.batch,
                "prompt_tokens": args.prompt,
                "completion_tokens": args.completion,
                "tokens_per_step": args.batch * (args.prompt + args.completion),
                "dtype": "float32",
                "beta": 0.0,
                "warmup_steps_per_block": args.warmup,
                "timed_steps_per_block": args.steps,
                "blocks": args.blocks,
                "threads": args.threads,
            },
            "target_ratio": TARGET_RATIO,
            "results": results,
        }
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nresults written to {path}")
    return 1 if args.check and below else 0


if __name__ == "__main__":
    sys.exit(main())
