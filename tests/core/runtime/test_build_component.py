"""build_component: every form a Trainer component spec may take, and the errors for bad ones."""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional

import pytest

import agentlightning as agl
from agentlightning.algorithm import Algorithm, Baseline
from agentlightning.errors import ComponentResolutionError
from agentlightning.tracer import DummyTracer, OtelTracer, Tracer
from agentlightning.trainer import build_component
from agentlightning.trainer.build import import_object


class Widget:
    """The component type under test."""

    def __init__(self, size: int = 1) -> None:
        self.size = size


class TakesTracer(Widget):
    def __init__(self, size: int = 1, tracer: Any = None) -> None:
        super().__init__(size)
        self.tracer = tracer


class TakesAnything(Widget):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(kwargs.pop("size", 1))
        self.kwargs = kwargs


class NotAWidget:
    pass


def registry(name: str) -> Optional[Callable[..., Any]]:
    return {"small": Widget, "traced": TakesTracer}.get(name)


# -- accepted forms ----------------------------------------------------------------------------------


def test_instance_is_returned_as_is() -> None:
    widget = Widget(5)
    assert build_component(widget, Widget, "widget") is widget


def test_class_is_instantiated() -> None:
    built = build_component(Widget, Widget, "widget")
    assert type(built) is Widget and built.size == 1


def test_factory_is_called() -> None:
    calls: List[int] = []

    def factory() -> Widget:
        calls.append(1)
        return Widget(7)

    built = build_component(factory, Widget, "widget")
    assert isinstance(built, Widget) and built.size == 7 and calls == [1]
    lambda_built = build_component(lambda: Widget(8), Widget, "widget")
    assert lambda_built is not None and lambda_built.size == 8


@pytest.mark.parametrize("path", [f"{__name__}:Widget", f"{__name__}.Widget"])
def test_import_string(path: str) -> None:
    built = build_component(path, Widget, "widget")
    assert type(built) is Widget


def test_import_string_for_a_real_component() -> None:
    tracer = build_component("agentlightning.tracer.dummy:DummyTracer", Tracer, "tracer")
    assert isinstance(tracer, DummyTracer)
    nested = import_object("agentlightning.store.memory:InMemoryLightningStore.from_uri")
    assert callable(nested)


def test_registered_name() -> None:
    built = build_component("small", Widget, "widget", registry=registry)
    assert type(built) is Widget


def test_registered_algorithm_name_through_the_trainer_registry() -> None:
    from agentlightning.plugins import resolve

    built = build_component("baseline", Algorithm, "algorithm", registry=functools.partial(resolve, "algorithms"))
    assert isinstance(built, Baseline)
    tracer = build_component("otel", Tracer, "tracer", registry=functools.partial(resolve, "tracers"))
    assert isinstance(tracer, OtelTracer)


def test_dict_with_type_passes_the_other_keys_as_arguments() -> None:
    for type_spec in ("small", Widget, f"{__name__}:Widget"):
        built = build_component({"type": type_spec, "size": 3}, Widget, "widget", registry=registry)
        assert type(built) is Widget and built.size == 3
    baseline = build_component(
        {"type": "baseline", "n_epochs": 2}, Algorithm, "algorithm", registry=lambda n: {"baseline": Baseline}.get(n)
    )
    assert isinstance(baseline, Baseline) and baseline.n_epochs == 2


def test_dict_without_type_uses_the_default_class() -> None:
    built = build_component({"size": 4}, Widget, "widget", dict_default_cls=TakesTracer)
    assert type(built) is TakesTracer and built.size == 4


def test_none_uses_the_default_factory_or_is_allowed() -> None:
    assert build_component(None, Widget, "widget", default_factory=lambda: Widget(9)).size == 9  # type: ignore[union-attr]
    assert build_component(None, Widget, "widget", allow_none=True) is None
    with pytest.raises(ComponentResolutionError, match="widget is required"):
        build_component(None, Widget, "widget")


# -- optional defaults ---------------------------------------------------------------------------------


def test_optional_defaults_only_reach_constructors_that_accept_them() -> None:
    tracer = DummyTracer()
    optional: Dict[str, Any] = {"tracer": tracer, "max_rollouts": 5}

    plain = build_component(Widget, Widget, "widget", optional_defaults=optional)
    assert type(plain) is Widget  # would have raised TypeError if given tracer=

    traced = build_component(TakesTracer, Widget, "widget", optional_defaults=optional)
    assert isinstance(traced, TakesTracer) and traced.tracer is tracer

    anything = build_component(TakesAnything, Widget, "widget", optional_defaults=optional)
    assert isinstance(anything, TakesAnything) and anything.kwargs == {"tracer": tracer, "max_rollouts": 5}

    by_name = build_component("traced", Widget, "widget", registry=registry, optional_defaults=optional)
    assert isinstance(by_name, TakesTracer) and by_name.tracer is tracer


def test_explicit_arguments_win_over_optional_defaults() -> None:
    mine = DummyTracer()
    built = build_component(
        {"type": TakesTracer, "tracer": mine}, Widget, "widget", optional_defaults={"tracer": DummyTracer()}
    )
    assert isinstance(built, TakesTracer) and built.tracer is mine


def test_optional_defaults_are_not_applied_to_instances_or_zero_arg_factories() -> None:
    widget = TakesTracer()
    assert build_component(widget, Widget, "widget", optional_defaults={"tracer": 1}) is widget
    built = build_component(lambda: TakesTracer(), Widget, "widget", optional_defaults={"tracer": 1})
    assert isinstance(built, TakesTracer) and built.tracer is None


# -- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("no_such_name", "no_such_name"),
        ("no_such_module_xyz.sub:Thing", "no_such_module_xyz"),
        (f"{__name__}:Missing", "Missing"),
        (f"{__name__}:NotAWidget", "NotAWidget"),
        ({"size": 3}, "type"),
        ({"type": "no_such_name"}, "no_such_name"),
        ({"type": Widget, "colour": "red"}, "colour"),
        (NotAWidget, "NotAWidget"),
        (lambda: 42, "int"),
        (42, "42"),
        (3.5, "3.5"),
        ([Widget], "Widget"),
    ],
)
def test_bad_specs_raise_component_resolution_error_naming_the_spec(spec: Any, needle: str) -> None:
    with pytest.raises(ComponentResolutionError) as info:
        build_component(spec, Widget, "widget", registry=registry)
    message = str(info.value)
    assert "widget" in message
    assert needle in message
    assert isinstance(info.value, TypeError)  # code written for 0.3 caught TypeError


def test_a_registry_lookup_error_becomes_a_component_resolution_error() -> None:
    def strict_registry(name: str) -> Optional[Callable[..., Any]]:
        raise LookupError(f"unknown widget {name!r}; known names: small")

    with pytest.raises(ComponentResolutionError) as info:
        build_component("tiny", Widget, "widget", registry=strict_registry)
    assert "tiny" in str(info.value) and "small" in str(info.value)
    assert isinstance(info.value.__cause__, LookupError)


def test_unknown_registered_name_through_the_trainer() -> None:
    with pytest.raises(ComponentResolutionError) as info:
        agl.Trainer(algorithm="no-such-algorithm")
    assert "no-such-algorithm" in str(info.value) and "baseline" in str(info.value)
    with pytest.raises(ComponentResolutionError, match="no-such-tracer"):
        agl.Trainer(tracer="no-such-tracer")


def test_a_component_of_another_kind_is_rejected_without_being_called() -> None:
    runs: List[Any] = []

    class Recording(Algorithm):
        def run(self, train_dataset: Any = None, val_dataset: Any = None) -> None:
            runs.append("ran")

    with pytest.raises(ComponentResolutionError) as info:
        build_component(Recording(), Tracer, "tracer")
    assert "Recording" in str(info.value) and "Tracer" in str(info.value)
    assert runs == []  # the algorithm instance was not mistaken for a factory and run


def test_build_component_is_exported() -> None:
    assert agl.build_component is build_component
