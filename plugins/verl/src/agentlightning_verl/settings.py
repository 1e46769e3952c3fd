"""Configuration of a verl run: verl's own config (its schema, composed by Hydra) plus this product's settings.

:func:`build_verl_config` composes verl's ``ppo_trainer`` config, merges the user's keys into it, writes
the settings verl also knows (tasks per step, group size, steps) into verl's keys, and runs verl's own
checks, all before anything starts. Every problem raises :class:`VerlConfigError` naming the key::

    VerlConfigError: actor_rollout_ref.actor.lrr: verl's config has no such key
    VerlConfigError: agentlightning.group_size: Input should be greater than or equal to 1 [input_value=0]
"""

from __future__ import annotations

import functools
import os
import re
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Mapping, Optional, Tuple, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = ["VerlConfigError", "VerlSettings", "build_verl_config", "SETTINGS_SECTION"]

SETTINGS_SECTION = "agentlightning"
"""The section of a verl config dict that holds this product's settings (0.3's layout)."""

# Each setting verl also has, and verl's key for it: ours wins, and a different value there is an error.
_MIRRORED = {
    "tasks_per_step": "data.train_batch_size",
    "group_size": "actor_rollout_ref.rollout.n",
    "n_steps": "trainer.total_training_steps",
}

_READ_KEYS: Dict[str, Tuple[Any, float, float, str]] = {
    "data.max_prompt_length": (int, 1, float("inf"), "a positive integer"),
    "data.max_response_length": (int, 1, float("inf"), "a positive integer"),
    "actor_rollout_ref.rollout.temperature": ((int, float), 0, float("inf"), "a number >= 0"),
    "actor_rollout_ref.rollout.top_p": ((int, float), 1e-9, 1, "a number in (0, 1]"),
}

# Estimators that need a critic's value estimates, which this plugin does not drive.
_NEEDS_CRITIC = {"gae"}


class VerlConfigError(ValueError):
    """A bad key or value in a verl run's configuration; ``key`` is its dotted path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class VerlSettings(BaseModel):
    """This product's settings of a verl run (the ``agentlightning`` section, or ``VERL(**settings)``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_steps: int = Field(10, ge=1, description="Training steps (verl's trainer.total_training_steps).")
    tasks_per_step: int = Field(
        8, ge=1, description="Distinct tasks per step (verl's data.train_batch_size); each played group_size times."
    )
    group_size: int = Field(
        4, ge=1, description="Rollouts per task (verl's actor_rollout_ref.rollout.n); the GRPO group."
    )
    agent_match: Optional[str] = Field(None, description="Regex: train only the LLM calls of matching agents.")
    llm_call_match: Optional[str] = Field(None, description="Regex on span names: which spans count as LLM calls.")
    reward_policy: Literal["final", "first_occurrence"] = Field(
        "final",
        description="'final': the rollout's last reward on its last response token; 'first_occurrence': each "
        "reward on the last token of the LLM call before it.",
    )
    missing_reward: Optional[float] = Field(
        None, description="Reward of a rollout that emitted none; None leaves it out of its group."
    )
    rollout_timeout: float = Field(1800.0, gt=0, description="Seconds a step waits for its rollouts.")
    model_name: str = Field("policy", min_length=1, description="The model name agents are given for the policy.")
    seed: int = Field(0, description="Seeds each step's draw of tasks.")

    @field_validator("agent_match", "llm_call_match")
    @classmethod
    def _compiles(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from exc
        return value


def parse_settings(section: Mapping[str, Any], keywords: Mapping[str, Any]) -> VerlSettings:
    """Settings from the config's ``agentlightning`` section and keyword arguments (a key in both is an error)."""
    both = sorted(set(section) & set(keywords))
    if both:
        raise VerlConfigError(f"{SETTINGS_SECTION}.{both[0]}", "given both in the config and as a keyword argument")
    try:
        return VerlSettings(**{**dict(section), **dict(keywords)})
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        value = error.get("input")
        raise VerlConfigError(f"{SETTINGS_SECTION}.{key}", f"{error['msg']} [input_value={value!r}]") from None


def _compose_defaults(overrides: Tuple[str, ...] = ()) -> "DictConfig":
    """verl's ``ppo_trainer`` config as ``python -m verl.trainer.main_ppo`` composes it (a fresh copy)."""
    return _composed(overrides).copy()


@functools.lru_cache(maxsize=4)
def _composed(overrides: Tuple[str, ...]) -> "DictConfig":
    import verl.trainer.config as verl_configs
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    folder = os.path.dirname(os.path.abspath(verl_configs.__file__))
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=folder, version_base=None):
        return compose(config_name="ppo_trainer", overrides=list(overrides))


def build_verl_config(
    config: Union[Mapping[str, Any], "DictConfig", str, os.PathLike[str], None] = None,
    **settings: Any,
) -> Tuple["DictConfig", VerlSettings]:
    """verl's config with the user's keys and our settings applied, validated; and the settings.

    ``config`` is a nested dict / ``DictConfig`` of verl keys (optionally with an ``agentlightning``
    section), or the path of a YAML file of them. ``settings`` are :class:`VerlSettings` fields.
    """
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    if config is None:
        user: DictConfig = OmegaConf.create({})
    elif isinstance(config, (str, os.PathLike)):
        loaded = OmegaConf.load(os.fspath(config))
        if not isinstance(loaded, DictConfig):
            raise VerlConfigError("<root>", f"{config} holds a list, not a mapping of verl keys")
        user = loaded
    elif isinstance(config, DictConfig):
        user = config.copy()
    elif isinstance(config, Mapping):
        user = OmegaConf.create(dict(config))
    else:
        raise VerlConfigError("<root>", f"expected a mapping, a DictConfig or a YAML path, got {type(config).__name__}")

    section: Dict[str, Any] = {}
    if SETTINGS_SECTION in user:
        raw = OmegaConf.to_container(user[SETTINGS_SECTION], resolve=True)
        if not isinstance(raw, dict):
            raise VerlConfigError(SETTINGS_SECTION, "must be a mapping of settings")
        section = {str(k): v for k, v in raw.items()}
        del user[SETTINGS_SECTION]
    parsed = parse_settings(section, settings)

    for setting, key in _MIRRORED.items():
        given = OmegaConf.select(user, key, default=None)
        ours = getattr(parsed, setting)
        if given is not None and given != ours:
            raise VerlConfigError(
                key, f"is {given!r} but {SETTINGS_SECTION}.{setting} is {ours!r}; set only {SETTINGS_SECTION}.{setting}"
            )

    # The rollout engine's name is mandatory in verl's schema; verl's own trainer uses vLLM here too.
    defaults = _compose_defaults(("actor_rollout_ref.rollout.name=vllm",))
    try:
        merged = OmegaConf.merge(defaults, user)
    except ConfigKeyError as exc:
        key = getattr(exc, "full_key", None) or str(exc)
        raise VerlConfigError(str(key), "verl's config has no such key") from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "<root>"
        raise VerlConfigError(str(key), str(exc).splitlines()[0]) from None
    assert isinstance(merged, DictConfig)
    for setting, key in _MIRRORED.items():
        OmegaConf.update(merged, key, getattr(parsed, setting), merge=False)
    _check(merged, user)
    return merged, parsed


def _check(config: "DictConfig", user: "DictConfig") -> None:
    """verl's own checks (its dataclass schemas and ``validate_config``), each error naming its key."""
    import contextlib
    import io
    import warnings

    from omegaconf import OmegaConf
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    # Keys the step loop reads that verl's schema leaves untyped.
    for key, (kind, low, high, wanted) in _READ_KEYS.items():
        value = OmegaConf.select(config, key)
        if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
            raise VerlConfigError(key, f"must be {wanted}, got {value!r}")
    model_path = OmegaConf.select(config, "actor_rollout_ref.model.path")
    if not model_path or str(model_path).startswith("~/models/"):
        raise VerlConfigError("actor_rollout_ref.model.path", "set the model to train (a local folder or hub id)")
    estimator = str(config.algorithm.adv_estimator)
    if estimator in _NEEDS_CRITIC:
        raise VerlConfigError(
            "algorithm.adv_estimator", f"{estimator!r} needs a critic, which this plugin does not run; use grpo or rloo"
        )
    if estimator != "grpo":  # verl computes grpo inline; the others come from its registry
        try:
            get_adv_estimator_fn(estimator)
        except (ValueError, KeyError) as exc:
            raise VerlConfigError("algorithm.adv_estimator", str(exc)) from None
    try:
        omega_conf_to_dataclass(config.algorithm)
    except (ValueError, TypeError, AssertionError) as exc:
        raise VerlConfigError("algorithm", str(exc)) from None
    # verl prints "All configuration checks passed" and warns that GRPO runs without a critic.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            validate_config(config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
        except (ValueError, AssertionError, TypeError) as exc:
            message = str(exc)
            raise VerlConfigError(_key_in_message(message, config, user), message) from None


_KEY_PREFIXES = ("", "actor_rollout_ref.", "data.", "trainer.", "algorithm.")


def _key_in_message(message: str, config: "DictConfig", user: "DictConfig") -> str:
    """The config key a verl error message talks about (verl often shortens them: ``actor.ppo_mini_batch_size``).

    Of the names it mentions that are keys, one the user set wins; ``<config>`` when none is a key.
    """
    from omegaconf import OmegaConf

    found: List[str] = []
    for name in re.findall(r"[a-z_]+(?:\.[a-z_]+)*", message):
        for prefix in _KEY_PREFIXES:
            key = prefix + name
            if "." in key and OmegaConf.select(config, key, default=_MISSING) is not _MISSING:
                found.append(key)
                break
    for key in found:
        if OmegaConf.select(user, key, default=_MISSING) is not _MISSING:
            return key
    return found[0] if found else "<config>"


_MISSING = object()
