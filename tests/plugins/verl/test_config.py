"""verl's config plus this product's settings: composed from verl's own schema, validated before anything starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest
import yaml
from verl_support import small_config

import agentlightning as agl
from agentlightning_verl import VERL, VerlConfigError, VerlSettings, build_verl_config


def test_settings_land_in_verl_keys_and_verl_defaults_fill_the_rest() -> None:
    config, settings = build_verl_config(
        small_config(), tasks_per_step=3, group_size=4, n_steps=5, agent_match="solver"
    )
    assert settings == VerlSettings(tasks_per_step=3, group_size=4, n_steps=5, agent_match="solver")
    assert config.data.train_batch_size == 3
    assert config.actor_rollout_ref.rollout.n == 4
    assert config.trainer.total_training_steps == 5
    assert config.actor_rollout_ref.actor.ppo_mini_batch_size == 2  # the user's key
    assert config.actor_rollout_ref.actor.clip_ratio == 0.2  # verl's default
    assert config.actor_rollout_ref.rollout.name == "vllm"


def test_the_agentlightning_section_holds_settings_as_in_0_3() -> None:
    raw = small_config(agentlightning={"group_size": 2, "reward_policy": "first_occurrence"})
    config, settings = build_verl_config(raw, tasks_per_step=2)
    assert (settings.group_size, settings.reward_policy, settings.tasks_per_step) == (2, "first_occurrence", 2)
    assert "agentlightning" not in config


def test_a_yaml_file_is_a_config(tmp_path: Path) -> None:
    path = tmp_path / "verl.yaml"
    path.write_text(yaml.safe_dump(small_config(agentlightning={"tasks_per_step": 2})))
    config, settings = build_verl_config(str(path), group_size=4)
    assert config.data.train_batch_size == 2 and settings.group_size == 4


BAD: Dict[str, Any] = {
    "unknown verl key": (small_config(actor_rollout_ref__actor__lrr=1e-6), {}, "actor_rollout_ref.actor.lrr"),
    "bad setting value": (small_config(), {"group_size": 0}, "agentlightning.group_size"),
    "unknown setting": (small_config(agentlightning={"groupsize": 4}), {}, "agentlightning.groupsize"),
    "bad regex": (small_config(), {"agent_match": "("}, "agentlightning.agent_match"),
    "bad reward policy": (small_config(), {"reward_policy": "last"}, "agentlightning.reward_policy"),
    "verl key fights a setting": (small_config(data__train_batch_size=64), {}, "data.train_batch_size"),
    "setting given twice": (
        small_config(agentlightning={"group_size": 4}),
        {"group_size": 4},
        "agentlightning.group_size",
    ),
    "estimator needs a critic": (small_config(algorithm__adv_estimator="gae"), {}, "algorithm.adv_estimator"),
    "unknown estimator": (small_config(algorithm__adv_estimator="nope"), {}, "algorithm.adv_estimator"),
    "no model": (small_config(actor_rollout_ref__model__path=None), {}, "actor_rollout_ref.model.path"),
    # verl's own validate_config: a mini-batch larger than the step's batch.
    "verl's batch check": (
        small_config(actor_rollout_ref__actor__ppo_mini_batch_size=64),
        {},
        "actor_rollout_ref.actor.ppo_mini_batch_size",
    ),
    "wrong type": (small_config(data__max_prompt_length="long"), {}, "data.max_prompt_length"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_configs_name_the_bad_key(case: str) -> None:
    config, settings, key = BAD[case]
    settings = {"tasks_per_step": 2, "group_size": 4, **settings}
    with pytest.raises(VerlConfigError) as caught:
        build_verl_config(config, **settings)
    assert caught.value.key == key, str(caught.value)
    assert str(caught.value).startswith(f"{key}: ")


def test_the_algorithm_validates_when_built_by_name() -> None:
    # Trainer(algorithm={"type": "verl", ...}) resolves the entry point and builds VERL: errors come then.
    trainer = agl.Trainer(
        algorithm={"type": "verl", "config": small_config(), "tasks_per_step": 2, "group_size": 4}, store="memory://"
    )
    assert isinstance(trainer.algorithm, VERL)
    assert trainer.algorithm.config.actor_rollout_ref.rollout.n == 4
    with pytest.raises(VerlConfigError, match="actor_rollout_ref.model.path"):
        agl.Trainer(algorithm="verl", store="memory://")


def test_the_0_3_import_path_resolves_to_the_plugin() -> None:
    from agentlightning.algorithm.verl import VERL as Compat

    assert Compat is VERL
