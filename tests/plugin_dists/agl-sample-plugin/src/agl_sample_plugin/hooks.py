"""Implementations of every agentlightning hook, recording what they are given."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentlightning import hookimpl
from agl_sample_plugin import log_import

log_import(__name__)

EVENTS: list[tuple[str, dict[str, Any]]] = []
"""``(hook name, arguments)`` for every notification received, in order."""


def open_sample_store(uri: str) -> Any:
    """``sample://anything`` -> an in-memory store."""
    from agentlightning.store import open_store

    return open_store("memory://")


class SampleTracer:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


def make_sample_exporter() -> Any:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    return InMemorySpanExporter()


class SampleHookAlgorithm:
    """Registered through ``agl_register_algorithms`` rather than an entry point."""

    def run(self, train_dataset: Any = None, val_dataset: Any = None) -> None:
        return None


class SampleAdapter:
    def adapt(self, source: Any) -> Any:
        return source


class SampleInstrumentor:
    """Counts how often it is switched on and off; both calls are idempotent."""

    def __init__(self) -> None:
        self.active = False
        self.instrument_calls = 0
        self.uninstrument_calls = 0

    def instrument(self) -> None:
        self.instrument_calls += 1
        self.active = True

    def uninstrument(self) -> None:
        self.uninstrument_calls += 1
        self.active = False


INSTRUMENTOR = SampleInstrumentor()


class SampleServingBackend:
    """A serving backend over the fake OpenAI server of agentlightning-testing; counts weight updates."""

    accepts_state_dicts = True

    def __init__(self, model: str, served_model_name: str | None = None) -> None:
        from agentlightning_testing.fake_openai import FakeOpenAIServer

        self.model = model
        self.model_name = served_model_name or model
        self.weights_version = 0
        self.loaded: list[Any] = []
        self._server = FakeOpenAIServer(models=[self.model_name]).start()

    @property
    def base_url(self) -> str:
        return str(self._server.base_url)

    def load_weights(self, source: Any) -> int:
        self.loaded.append(("weights", source))
        self.weights_version += 1
        return self.weights_version

    def load_lora(self, source: Any, config: Any = None) -> int:
        self.loaded.append(("lora", source))
        self.weights_version += 1
        return self.weights_version

    def request_extras(self) -> dict[str, Any]:
        return {"return_token_ids": True}

    def close(self) -> None:
        self._server.stop()


def add_hello_command(subparsers: Any) -> None:
    parser = subparsers.add_parser("sample-hello", help="Say hello (the sample plugin's command).")
    parser.add_argument("--name", default="world", help="Who to greet.")

    def run(args: Any) -> int:
        print(f"hello {args.name} from agl-sample-plugin")
        return 0

    parser.set_defaults(handler=run)


@hookimpl
def agl_register_store_backends(register: Callable[[str, Callable[[str], Any]], None]) -> None:
    register("sample", open_sample_store)


@hookimpl
def agl_register_tracers(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("sample", SampleTracer)


@hookimpl
def agl_register_span_exporters(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("sample", make_sample_exporter)


@hookimpl
def agl_register_algorithms(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("sample-hook-algo", SampleHookAlgorithm)


@hookimpl
def agl_register_adapters(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("sample", SampleAdapter)


@hookimpl
def agl_register_instrumentors(register: Callable[[str, Any], None]) -> None:
    register("sample", INSTRUMENTOR)


@hookimpl
def agl_register_serving_backends(register: Callable[[str, Callable[..., Any]], None]) -> None:
    register("sample", SampleServingBackend)


@hookimpl
def agl_register_commands(register: Callable[[str, Callable[[Any], None]], None]) -> None:
    register("sample-hello", add_hello_command)


@hookimpl
def agl_on_rollout_start(rollout: Any, attempt: Any, worker_id: str | None) -> None:
    EVENTS.append(("agl_on_rollout_start", {"rollout": rollout, "attempt": attempt, "worker_id": worker_id}))


@hookimpl
def agl_on_rollout_end(
    rollout: Any, attempt: Any, worker_id: str | None, status: str, error: BaseException | None
) -> None:
    EVENTS.append(
        (
            "agl_on_rollout_end",
            {"rollout": rollout, "attempt": attempt, "worker_id": worker_id, "status": status, "error": error},
        )
    )
