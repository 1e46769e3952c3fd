"""Config validation names the field and the rejected value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentlightning_grpo import GRPOConfig


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("clip_eps_low", 1.5),
        ("clip_eps_high", -0.1),
        ("learning_rate", 0.0),
        ("beta", -1.0),
        ("group_size", 0),
        ("lora_r", 0),
        ("max_length", 1),
        ("micro_batch_tokens", 1),
        ("dtype", "float8"),
        ("finetuning", "qlora"),
        ("adam_betas", (0.9, 1.5)),
        ("lora_target_modules", []),
    ],
)
def test_bad_values_are_rejected_naming_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        GRPOConfig(**{field: value})
    message = str(caught.value)
    assert field in message
    assert repr(value) in message or str(value) in message


def test_unknown_setting_is_rejected() -> None:
    with pytest.raises(ValidationError, match="lr"):
        GRPOConfig(lr=1e-5)  # type: ignore[call-arg]


def test_config_round_trips_through_json() -> None:
    config = GRPOConfig(lora_target_modules="all-linear", beta=0.04, clip_eps_high=0.28, max_grad_norm=None)
    assert GRPOConfig.model_validate_json(config.model_dump_json()) == config
