"""The GRPO update on a tiny Qwen2: what it changes, what it leaves alone, and how it resumes."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List

import pytest
import torch
from grpo_test_support import VOCAB_SIZE, make_tiny_model

from agentlightning.adapter.sequence import TokenSequence
from agentlightning_grpo import (
    FailedRolloutWarning,
    GRPOConfig,
    RolloutReward,
    TrainablePolicy,
    compute_group_advantages,
    latest_checkpoint,
)

PROMPT_LENGTH = 6


# transformers deprecation notes raised from inside PEFT, not from this package.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning:transformers")


def _policy(**settings: object) -> TrainablePolicy:
    settings.setdefault("learning_rate", 1e-2)
    return TrainablePolicy(make_tiny_model(), GRPOConfig(**settings))  # type: ignore[arg-type]


def _group(prompt_seed: int = 3) -> tuple[List[int], List[TokenSequence]]:
    """One prompt and two completions of it: a good one (rollout 'good') and a bad one ('bad')."""
    generator = torch.Generator().manual_seed(prompt_seed)
    prompt = torch.randint(1, VOCAB_SIZE, (PROMPT_LENGTH,), generator=generator).tolist()
    sequences = []
    for rollout_id in ("good", "bad"):
        completion = torch.randint(1, VOCAB_SIZE, (4,), generator=generator).tolist()
        sequences.append(
            TokenSequence(
                rollout_id=rollout_id,
                token_ids=prompt + completion,
                loss_mask=[0] * PROMPT_LENGTH + [1] * 4,
                logprobs=[None] * (PROMPT_LENGTH + 4),
                prompt_length=PROMPT_LENGTH,
            )
        )
    return prompt, sequences


def _with_current_logprobs(policy: TrainablePolicy, sequences: List[TokenSequence]) -> List[TokenSequence]:
    """What the serving engine would have recorded when sampling from the current policy."""
    scored = policy.token_logprobs(sequences)
    return [
        sequence.model_copy(update={"logprobs": logprobs}) for sequence, logprobs in zip(sequences, scored, strict=True)
    ]


def _logprob_sum(policy: TrainablePolicy, sequence: TokenSequence) -> float:
    return sum(value for value in policy.token_logprobs([sequence])[0] if value is not None)


def _snapshot(policy: TrainablePolicy) -> Dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in policy.model.named_parameters()}


def _last_logits(model: torch.nn.Module, prompt: List[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([prompt])).logits[0, -1].float()


def _greedy(policy: TrainablePolicy, prompt: List[int]) -> List[int]:
    policy.model.eval()
    with torch.no_grad():
        output = policy.model.generate(  # type: ignore[operator]
            input_ids=torch.tensor([prompt]), max_new_tokens=4, do_sample=False, pad_token_id=0
        )
    policy.model.train()
    return [int(token) for token in output[0, len(prompt) :]]


def test_one_step_changes_the_lora_weights_only_and_the_outputs(tmp_path: Path) -> None:
    policy = _policy()
    prompt, sequences = _group()
    sequences = _with_current_logprobs(policy, sequences)
    before = _snapshot(policy)
    logits_before = _last_logits(policy.model, prompt)
    served_before = policy.export_full_model(tmp_path / "served-0")

    metrics = policy.update(sequences, {"good": 1.0, "bad": -1.0})

    assert metrics.step == 1 and policy.step == 1 and not metrics.skipped
    after = _snapshot(policy)
    lora_b = [name for name in after if "lora_B" in name]
    base = [name for name in after if "lora_" not in name]
    assert lora_b and base
    # LoRA starts with B = 0, so the first step moves every B (A only gets gradient once B is nonzero).
    assert all(not torch.equal(before[name], after[name]) for name in lora_b)
    assert all(torch.equal(before[name], after[name]) for name in base)
    assert not torch.allclose(logits_before, _last_logits(policy.model, prompt))

    # What the serving backend loads after the step: the merged weights give the policy's outputs.
    from transformers import AutoModelForCausalLM

    served = AutoModelForCausalLM.from_pretrained(policy.export_full_model(tmp_path / "served-1"))
    original = AutoModelForCausalLM.from_pretrained(served_before)
    policy.model.eval()
    torch.testing.assert_close(_last_logits(served, prompt), _last_logits(policy.model, prompt), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(_last_logits(original, prompt), _last_logits(served, prompt))


def test_a_few_steps_move_good_completions_up_and_bad_ones_down() -> None:
    policy = _policy()
    prompt, sequences = _group()
    good_before, bad_before = (_logprob_sum(policy, sequence) for sequence in sequences)
    greedy_before = _greedy(policy, prompt)
    for _ in range(5):
        sequences = _with_current_logprobs(policy, sequences)
        metrics = policy.update(sequences, {"good": 1.0, "bad": -1.0})
        assert metrics.clip_fraction == 0.0  # on-policy: recorded logprobs equal the policy's
        assert metrics.ratio_mean == pytest.approx(1.0, abs=1e-5)
    good_after, bad_after = (_logprob_sum(policy, sequence) for sequence in sequences)
    assert good_after > good_before + 1.0
    assert bad_after < bad_before - 1.0
    assert _greedy(policy, prompt) != greedy_before


def test_kl_is_zero_before_any_update_and_positive_after() -> None:
    policy = _policy(beta=0.1)
    _, sequences = _group()
    first = policy.update(_with_current_logprobs(policy, sequences), {"good": 1.0, "bad": -1.0})
    assert first.kl == 0.0  # LoRA starts as the identity: policy == reference
    second = policy.update(_with_current_logprobs(policy, sequences), {"good": 1.0, "bad": -1.0})
    assert second.kl > 0.0
    assert second.loss == pytest.approx(second.pg_loss + 0.1 * second.kl, abs=1e-6)


def test_full_finetuning_trains_every_weight_with_a_frozen_reference(tmp_path: Path) -> None:
    policy = _policy(finetuning="full", beta=0.1, learning_rate=1e-3)
    prompt, sequences = _group()
    before = _snapshot(policy)
    first = policy.update(_with_current_logprobs(policy, sequences), {"good": 1.0, "bad": -1.0})
    second = policy.update(_with_current_logprobs(policy, sequences), {"good": 1.0, "bad": -1.0})
    assert first.kl == 0.0 and second.kl > 0.0
    after = _snapshot(policy)
    assert not any("lora_" in name for name in after)
    assert not torch.equal(
        before["model.layers.0.self_attn.q_proj.weight"], after["model.layers.0.self_attn.q_proj.weight"]
    )
    with pytest.raises(ValueError, match="finetuning='lora'"):
        policy.export_adapter(tmp_path / "adapter")

    from transformers import AutoModelForCausalLM

    served = AutoModelForCausalLM.from_pretrained(policy.export_full_model(tmp_path / "full"))
    policy.model.eval()
    torch.testing.assert_close(_last_logits(served, prompt), _last_logits(policy.model, prompt))


def test_missing_sampling_logprobs_are_counted_and_trained_at_ratio_one() -> None:
    policy = _policy()
    _, sequences = _group()  # no sampling logprobs at all
    metrics = policy.update(sequences, {"good": 1.0, "bad": -1.0})
    assert metrics.missing_logprob_tokens == metrics.loss_tokens == 8
    assert metrics.ratio_mean == pytest.approx(1.0) and metrics.clip_fraction == 0.0


def _accumulated_gradients(policy: TrainablePolicy) -> Dict[str, torch.Tensor]:
    """Record every trainable parameter's gradient as the optimizer sees it, just before each step."""
    seen: Dict[str, torch.Tensor] = {}
    names = {id(param): name for name, param in policy.model.named_parameters()}

    def record(optimizer: torch.optim.Optimizer, *_: object) -> None:
        for group in optimizer.param_groups:
            for param in group["params"]:
                grad = param.grad if param.grad is not None else torch.zeros_like(param)
                seen[names[id(param)]] = grad.detach().clone()

    policy.optimizer.register_step_pre_hook(record)
    return seen


def test_micro_batching_gives_the_same_update_as_one_batch(sequence_factory: Callable[..., TokenSequence]) -> None:
    # What micro-batching must keep equal is what the optimizer is given: the loss and the accumulated
    # gradient. Weights after the step are not compared: Adam's first step moves a weight by about
    # +-lr whatever its gradient's size, so a gradient near zero flips sign with float summation order.
    sequences = [
        sequence_factory(f"r{i}", prompt_length=4, segments=[3 + i, 2, 4], seed=i, logprob=-6.0) for i in range(4)
    ]
    advantages = {"r0": 1.0, "r1": -0.5, "r2": 0.25, "r3": -0.75}
    whole = _policy(micro_batch_tokens=4096, max_grad_norm=None)
    split = _policy(micro_batch_tokens=16, max_grad_norm=None)
    whole_gradients, split_gradients = _accumulated_gradients(whole), _accumulated_gradients(split)
    whole_metrics = whole.update(sequences, advantages)
    split_metrics = split.update(sequences, advantages)
    assert whole_metrics.micro_batches == 1 and split_metrics.micro_batches == 4
    assert whole_metrics.loss_tokens == split_metrics.loss_tokens > 0
    assert split_metrics.loss == pytest.approx(whole_metrics.loss, rel=1e-5, abs=1e-7)
    assert split_metrics.pg_loss == pytest.approx(whole_metrics.pg_loss, rel=1e-5, abs=1e-7)
    assert split_metrics.grad_norm == pytest.approx(whole_metrics.grad_norm, rel=1e-4)
    assert whole_gradients.keys() == split_gradients.keys() and whole_gradients
    # The step had something to move: LoRA's B matrices (zero at the start) get a nonzero gradient.
    assert any("lora_B" in name and bool(grad.abs().max() > 0) for name, grad in whole_gradients.items())
    scale = max(float(grad.abs().max()) for grad in whole_gradients.values())
    for name, grad in whole_gradients.items():
        # Relative to the largest gradient entry: summation order changes the last bits, never more.
        torch.testing.assert_close(split_gradients[name], grad, atol=1e-5 * scale, rtol=1e-4, msg=name)


def test_logit_selection_modes_agree(sequence_factory: Callable[..., TokenSequence]) -> None:
    policy = _policy()
    assert policy.logit_selection == "mask"
    sequences = [sequence_factory(f"r{i}", prompt_length=3 + i, segments=[4, 3, 2], seed=i) for i in range(3)]
    results = {}
    for mode in ("mask", "positions", "all"):
        policy.logit_selection = mode  # type: ignore[assignment]
        results[mode] = policy.token_logprobs(sequences)
    for mode in ("positions", "all"):
        for expected, got in zip(results["mask"], results[mode], strict=True):
            assert [value is None for value in expected] == [value is None for value in got]
            assert [v for v in got if v is not None] == pytest.approx([v for v in expected if v is not None], abs=1e-5)
    # Context tokens (prompt, tool result) get no score.
    assert results["mask"][0][:3] == [None, None, None] and results["mask"][0][7:10] == [None, None, None]


def test_a_failed_rollout_is_left_out_of_its_group_not_a_crash(sequence_factory: Callable[..., TokenSequence]) -> None:
    policy = _policy()
    rewards = {"a": 1.0, "b": 0.0, "c": None, "d": 0.5}
    sequences = [sequence_factory(rid, prompt_length=4, segments=[5], seed=i) for i, rid in enumerate(rewards)]
    with pytest.warns(FailedRolloutWarning, match="c"):
        advantages = compute_group_advantages(RolloutReward(rid, "task-0", reward) for rid, reward in rewards.items())
    metrics = policy.update(sequences, advantages.advantages)
    assert metrics.sequences == 3 and metrics.dropped_rollouts == ["c"] and not metrics.skipped


def test_nothing_to_train_leaves_the_policy_unchanged(sequence_factory: Callable[..., TokenSequence]) -> None:
    policy = _policy(max_length=4)
    before = _snapshot(policy)
    sequence = sequence_factory("r", prompt_length=6, segments=[3], seed=0)
    with pytest.warns(UserWarning, match="no model token"):
        metrics = policy.update([sequence], {"r": 1.0})
    assert metrics.skipped and metrics.truncated_sequences == 1 and metrics.dropped_sequences == 1
    assert policy.step == 0
    assert all(torch.equal(before[name], param) for name, param in policy.model.named_parameters())


def test_checkpoint_restores_weights_optimizer_and_step(tmp_path: Path) -> None:
    _, sequences = _group()
    advantages = {"good": 1.0, "bad": -1.0}
    trained = _policy()
    for _ in range(2):
        trained.update(_with_current_logprobs(trained, sequences), advantages)
    saved = trained.save_checkpoint(tmp_path / "run" / "step-000002", extra_state={"loop_step": 2})
    assert latest_checkpoint(tmp_path / "run") == saved

    resumed = _policy()
    assert resumed.load_checkpoint(saved) == {"loop_step": 2}
    assert resumed.step == 2
    for (name, a), (_, b) in zip(trained.model.named_parameters(), resumed.model.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    assert resumed.optimizer.state_dict()["state"].keys() == trained.optimizer.state_dict()["state"].keys()
    # Adam's moments came back too: the next step is identical on both.
    batch = _with_current_logprobs(trained, sequences)
    trained.update(batch, advantages)
    resumed.update(batch, advantages)
    for (name, a), (_, b) in zip(trained.model.named_parameters(), resumed.model.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)

    # A later save to the same folder replaces it whole.
    trained.save_checkpoint(saved)
    assert [p.name for p in saved.parent.iterdir()] == ["step-000002"]


def test_checkpoint_of_another_lora_shape_is_refused(tmp_path: Path) -> None:
    saved = _policy(lora_r=4).save_checkpoint(tmp_path / "step-000000")
    with pytest.raises(ValueError, match="lora_r=4"):
        _policy(lora_r=8).load_checkpoint(saved)
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        _policy().load_checkpoint(tmp_path)


def test_adapter_export_is_a_peft_folder(tmp_path: Path) -> None:
    policy = _policy()
    _, sequences = _group()
    policy.update(_with_current_logprobs(policy, sequences), {"good": 1.0, "bad": -1.0})
    folder = policy.export_adapter(tmp_path / "adapter")
    assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
    state = policy.adapter_state_dict()
    assert state and all("lora_" in name and tensor.device.type == "cpu" for name, tensor in state.items())

    from peft import PeftModel

    reloaded = PeftModel.from_pretrained(make_tiny_model(), str(folder)).eval()
    policy.model.eval()
    prompt = sequences[0].token_ids[:PROMPT_LENGTH]
    torch.testing.assert_close(_last_logits(reloaded, prompt), _last_logits(policy.model, prompt))


def test_a_rollout_with_several_sequences_trains_and_scores_each(
    sequence_factory: Callable[..., TokenSequence],
) -> None:
    # Two LLM calls of one rollout whose prompts do not extend each other: two sequences, one reward.
    policy = _policy()
    first = sequence_factory("shared", prompt_length=4, segments=[5], seed=1)
    second = sequence_factory("shared", prompt_length=7, segments=[3, 2, 3], seed=2)
    scored = policy.token_logprobs([first, second])
    assert [value is None for value in scored[0]] == [bit == 0 for bit in first.loss_mask]
    assert [value is None for value in scored[1]] == [bit == 0 for bit in second.loss_mask]
    metrics = policy.update([first, second], {"shared": 1.0})
    assert metrics.sequences == 2 and metrics.loss_tokens == 5 + 3 + 3


def test_zero_advantage_sequences_skip_the_model_but_keep_the_gradient(
    sequence_factory: Callable[..., TokenSequence],
) -> None:
    from agentlightning_grpo.update import clipped_policy_loss, token_logprobs

    sequences = [
        sequence_factory(f"r{i}", prompt_length=4, segments=[3 + i, 2, 4], seed=i, logprob=-6.0) for i in range(4)
    ]
    advantages = {"r0": 1.0, "r1": 0.0, "r2": -0.5, "r3": 0.0}
    skipping, reference = _policy(max_grad_norm=None), _policy(max_grad_norm=None)
    gradients = _accumulated_gradients(skipping)
    metrics = skipping.update(sequences, advantages)
    # Two of the four sequences ran (one micro-batch), but N counts every model token of the step.
    assert metrics.sequences == 4 and metrics.micro_batches == 1

    # The reference: every sequence through the model, the loss divided by the same N.
    prepared = reference.prepare(sequences, advantages)
    assert metrics.loss_tokens == prepared.loss_tokens
    reference.model.train()
    for micro_batch in prepared.micro_batches:
        logprobs, _ = token_logprobs(reference.model, micro_batch, selection=reference.logit_selection)
        terms = clipped_policy_loss(logprobs, micro_batch, clip_eps_low=0.2, clip_eps_high=0.2)
        (terms.loss_sum / prepared.loss_tokens).backward()
    expected = {name: param.grad for name, param in reference.model.named_parameters() if param.requires_grad}
    assert expected.keys() == gradients.keys()
    scale = max(float(grad.abs().max()) for grad in expected.values() if grad is not None)
    assert scale > 0
    for name, grad in expected.items():
        assert grad is not None
        torch.testing.assert_close(gradients[name], grad, atol=1e-5 * scale, rtol=1e-4, msg=name)


def test_a_step_of_only_zero_advantages_still_takes_the_optimizer_step(
    sequence_factory: Callable[..., TokenSequence],
) -> None:
    sequences = [sequence_factory(f"r{i}", prompt_length=4, segments=[3, 2], seed=i) for i in range(2)]
    policy = _policy()
    policy.update(sequences, {"r0": 1.0, "r1": -1.0})
    before = _snapshot(policy)
    metrics = policy.update(sequences, {"r0": 0.0, "r1": 0.0})
    # No forward ran, yet Adam's momentum from the first step moves the adapter, as a zero gradient would.
    assert metrics.micro_batches == 0 and not metrics.skipped and policy.step == 2
    moved = [name for name, value in _snapshot(policy).items() if not torch.equal(value, before[name])]
    assert moved and all("lora_" in name for name in moved)
