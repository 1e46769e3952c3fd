"""The REST API over real HTTP: bad requests get 4xx JSON errors naming the problem, and the server keeps serving."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator

import httpx
import pytest

from agentlightning.server import StoreServer
from agentlightning.store.base import LightningStore
from agentlightning.store.memory import InMemoryLightningStore

API = "/v1/agl"


def _error(response: httpx.Response, status: int, name: str, *fragments: str) -> Dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == name, body
    for fragment in fragments:
        assert fragment in body["message"], (fragment, body["message"])
    return body


def _still_serving(http: httpx.Client) -> None:
    assert http.get(f"{API}/health").json()["status"] == "ok"
    created = http.post(f"{API}/rollouts", json={"input": {"still": "serving"}})
    assert created.status_code == 201, created.text


def test_health_statistics_and_a_round_trip(http: httpx.Client) -> None:
    assert http.get(f"{API}/health").json() == {"status": "ok", "api_version": "1"}
    created = http.post(f"{API}/rollouts", json={"input": {"q": 1}, "mode": "train", "metadata": {"k": "v"}})
    assert created.status_code == 201
    rollout = created.json()
    assert rollout["status"] == "preparing" and rollout["attempt"]["sequence_id"] == 1
    got = http.get(f"{API}/rollouts/{rollout['rollout_id']}").json()
    assert got["input"] == {"q": 1} and got["metadata"] == {"k": "v"}
    listed = http.get(f"{API}/rollouts", params={"status_in": ["preparing"], "limit": 5}).json()
    assert listed["total"] == 1 and listed["limit"] == 5 and listed["items"][0]["rollout_id"] == rollout["rollout_id"]
    assert http.get(f"{API}/statistics").json()["total_rollouts"] == 1


@pytest.mark.parametrize(
    "path,body",
    [
        ("/rollouts", b'{"input": '),
        ("/queues/rollouts/enqueue", b"{rollouts: []}"),
        ("/spans", b"\xff\xfe not json"),
        ("/waits/rollouts", b"[1, 2"),
    ],
)
def test_malformed_json(http: httpx.Client, path: str, body: bytes) -> None:
    response = http.post(f"{API}{path}", content=body, headers={"content-type": "application/json"})
    _error(response, 400, "InvalidJSON", "not valid JSON")
    _still_serving(http)


def test_missing_body(http: httpx.Client) -> None:
    response = http.post(f"{API}/waits/rollouts", content=b"", headers={"content-type": "application/json"})
    _error(response, 422, "ValueError", "body", "required")
    _error(http.post(f"{API}/waits/rollouts", json=[1, 2]), 422, "TypeError", "body")
    _still_serving(http)


@pytest.mark.parametrize(
    "path,body,name,fragments",
    [
        ("/rollouts", {"input": 1, "metadata": "not a dict"}, "TypeError", ["metadata", "not a dict"]),
        ("/rollouts", {"input": 1, "config": {"max_attempts": "three"}}, "ValueError", ["max_attempts"]),
        ("/rollouts", {"input": 1, "worker": "typo"}, "ValueError", ["worker", "xtra"]),
        ("/rollouts", {"mode": "train"}, "ValueError", ["input", "required"]),
        ("/queues/rollouts/dequeue", {"limit": "5"}, "TypeError", ["limit", "'5'"]),
        ("/queues/rollouts/dequeue", {"limit": True}, "TypeError", ["limit"]),
        ("/waits/rollouts", {"rollout_ids": "ro-1"}, "TypeError", ["rollout_ids", "ro-1"]),
        ("/spans", {"spans": [{"name": "no ids"}]}, "ValueError", ["spans.0.rollout_id"]),
        ("/spans/sequence-ids", {"pairs": [["ro-1"]]}, "ValueError", ["pairs.0"]),
        ("/resources", {"resources": {"x": {"resource_type": "spaceship"}}}, "ValueError", ["spaceship"]),
        ("/rollouts/search", {"limit": 1.5}, "TypeError", ["limit"]),
    ],
)
def test_wrong_types_and_shapes(http: httpx.Client, path: str, body: Any, name: str, fragments: list) -> None:
    response = http.post(f"{API}{path}", json=body)
    _error(response, 422, name, *fragments)
    _still_serving(http)


def test_wrong_types_in_the_query_string(http: httpx.Client) -> None:
    _error(http.get(f"{API}/rollouts", params={"limit": "many"}), 422, "ValueError", "limit")
    _error(http.get(f"{API}/workers", params={"nonsense": "1"}), 422, "ValueError", "nonsense")
    _still_serving(http)


def test_values_the_store_rejects_are_400_and_name_the_value(http: httpx.Client) -> None:
    _error(http.post(f"{API}/rollouts", json={"input": 1, "mode": "training"}), 400, "InvalidStatusError", "training")
    search = http.post(f"{API}/rollouts/search", json={"sort_by": "nope; DROP TABLE"})
    _error(search, 400, "ValueError", "DROP TABLE")
    _error(http.post(f"{API}/rollouts/search", json={"limit": -2}), 400, "ValueError", "-2")
    _error(http.post(f"{API}/queues/rollouts/dequeue", json={"limit": 0}), 400, "ValueError", "0")
    _still_serving(http)


def test_unknown_ids_are_404_naming_the_id(http: httpx.Client) -> None:
    missing = "ro-does-not-exist"
    body = _error(http.get(f"{API}/rollouts/{missing}"), 404, "RolloutNotFoundError", missing)
    assert body["details"]["item_id"] == missing
    _error(http.patch(f"{API}/rollouts/{missing}", json={"status": "failed"}), 404, "RolloutNotFoundError", missing)
    _error(http.post(f"{API}/rollouts/{missing}/attempts", json={}), 404, "RolloutNotFoundError", missing)
    _error(http.get(f"{API}/rollouts/{missing}/attempts"), 404, "RolloutNotFoundError", missing)
    rollout = http.post(f"{API}/rollouts", json={"input": 1}).json()
    rid = rollout["rollout_id"]
    patch = http.patch(f"{API}/rollouts/{rid}/attempts/at-missing", json={"status": "failed"})
    _error(patch, 404, "AttemptNotFoundError", "at-missing")
    _error(http.get(f"{API}/resources/rs-missing"), 404, "ResourcesNotFoundError", "rs-missing")
    _error(http.get(f"{API}/workers/w-missing"), 404, "WorkerNotFoundError", "w-missing")
    span = {
        "rollout_id": missing,
        "attempt_id": "at-1",
        "sequence_id": 1,
        "trace_id": "a" * 32,
        "span_id": "b" * 16,
        "name": "x",
    }
    _error(http.post(f"{API}/spans", json={"spans": [span]}), 404, "RolloutNotFoundError", missing)
    _still_serving(http)


def test_forbidden_transitions_are_409(http: httpx.Client) -> None:
    rollout = http.post(f"{API}/rollouts", json={"input": 1}).json()
    rid = rollout["rollout_id"]
    assert http.patch(f"{API}/rollouts/{rid}/attempts/latest", json={"status": "succeeded"}).status_code == 200
    _error(http.patch(f"{API}/rollouts/{rid}", json={"status": "running"}), 409, "InvalidTransitionError", rid)
    again = http.patch(f"{API}/rollouts/{rid}/attempts/latest", json={"status": "failed"})
    _error(again, 409, "InvalidTransitionError", rollout["attempt"]["attempt_id"])
    _still_serving(http)


def test_unknown_route_and_method(http: httpx.Client) -> None:
    _error(http.get("/v1/agl/nothing/here"), 404, "RouteNotFound", "/v1/agl/nothing/here")
    _error(http.delete(f"{API}/health"), 405, "MethodNotAllowed")
    # OTLP ingest is a plugin this environment does not have: the 404 says which distribution serves it.
    otlp = http.post("/v1/traces", json={"resourceSpans": []})
    _error(otlp, 404, "RouteNotFound", "/v1/traces", "pip install agentlightning-otlp")
    _still_serving(http)


def test_oversized_payload_is_413(http: httpx.Client) -> None:
    big = {"input": "x" * (2 << 20)}  # the fixture's server takes 1 MiB
    _error(http.post(f"{API}/rollouts", json=big), 413, "PayloadTooLarge", "limit")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it arrives
        yield b'{"input": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}'

    _error(
        http.post(f"{API}/rollouts", content=chunks(), headers={"content-type": "application/json"}),
        413,
        "PayloadTooLarge",
    )
    _still_serving(http)
    assert http.get(f"{API}/statistics").json()["total_rollouts"] == 1  # only _still_serving's rollout


def test_update_applies_only_the_fields_present(http: httpx.Client) -> None:
    rid = http.post(f"{API}/rollouts", json={"input": 1, "metadata": {"a": 1}, "mode": "val"}).json()["rollout_id"]
    updated = http.patch(f"{API}/rollouts/{rid}", json={"metadata": None}).json()
    assert updated["metadata"] is None and updated["mode"] == "val" and updated["input"] == 1
    updated = http.patch(f"{API}/rollouts/{rid}", json={"input": {"new": True}}).json()
    assert updated["input"] == {"new": True} and updated["mode"] == "val"


def test_idempotency_key_applies_a_mutation_once(http: httpx.Client) -> None:
    headers = {"Idempotency-Key": "retry-me-1"}
    first = http.post(f"{API}/rollouts", json={"input": 1}, headers=headers)
    second = http.post(f"{API}/rollouts", json={"input": 1}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers.get("idempotent-replayed") == "true"
    assert http.get(f"{API}/statistics").json()["total_rollouts"] == 1
    # the same key on another route is another request
    enqueued = http.post(f"{API}/queues/rollouts/enqueue", json={"rollouts": [{"input": 2}]}, headers=headers)
    assert enqueued.status_code == 201
    assert http.get(f"{API}/statistics").json()["total_rollouts"] == 2


def test_enqueue_with_the_same_client_request_id_creates_one_rollout(http: httpx.Client) -> None:
    body = {"rollouts": [{"input": "task", "client_request_id": "req-42"}]}
    first = http.post(f"{API}/queues/rollouts/enqueue", json=body).json()
    again = http.post(f"{API}/queues/rollouts/enqueue", json=body).json()  # no Idempotency-Key: the store dedupes
    assert first[0]["rollout_id"] == again[0]["rollout_id"]
    assert http.get(f"{API}/rollouts").json()["total"] == 1


def test_wait_is_a_bounded_long_poll(serve: Any) -> None:
    server = serve(max_wait_seconds=0.2)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        rid = http.post(f"{API}/rollouts", json={"input": 1}).json()["rollout_id"]
        answer = http.post(f"{API}/waits/rollouts", json={"rollout_ids": [rid, "ro-unknown"], "timeout": None})
        assert answer.status_code == 200
        assert answer.json() == {"rollouts": [], "pending": [rid]}  # held 0.2 s at most, unknown ids omitted
        http.patch(f"{API}/rollouts/{rid}/attempts/latest", json={"status": "succeeded"})
        done = http.post(f"{API}/waits/rollouts", json={"rollout_ids": [rid], "timeout": 5}).json()
        assert [r["status"] for r in done["rollouts"]] == ["succeeded"] and done["pending"] == []


def test_openapi_document_covers_every_store_operation(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    assert doc["info"]["title"] == "Agent Lightning store"
    operations = {
        (method.upper(), path) for path, item in doc["paths"].items() for method in item if method != "parameters"
    }
    by_method = {
        "statistics": ("GET", f"{API}/statistics"),
        "start_rollout": ("POST", f"{API}/rollouts"),
        "enqueue_rollout": ("POST", f"{API}/queues/rollouts/enqueue"),
        "enqueue_many_rollouts": ("POST", f"{API}/queues/rollouts/enqueue"),
        "dequeue_rollout": ("POST", f"{API}/queues/rollouts/dequeue"),
        "dequeue_many_rollouts": ("POST", f"{API}/queues/rollouts/dequeue"),
        "start_attempt": ("POST", f"{API}/rollouts/{{rollout_id}}/attempts"),
        "query_rollouts": ("POST", f"{API}/rollouts/search"),
        "get_rollout_by_id": ("GET", f"{API}/rollouts/{{rollout_id}}"),
        "update_rollout": ("PATCH", f"{API}/rollouts/{{rollout_id}}"),
        "wait_for_rollouts": ("POST", f"{API}/waits/rollouts"),
        "query_attempts": ("GET", f"{API}/rollouts/{{rollout_id}}/attempts"),
        "get_latest_attempt": ("GET", f"{API}/rollouts/{{rollout_id}}/attempts/latest"),
        "update_attempt": ("PATCH", f"{API}/rollouts/{{rollout_id}}/attempts/{{attempt_id}}"),
        "add_span": ("POST", f"{API}/spans"),
        "add_many_spans": ("POST", f"{API}/spans"),
        "get_next_span_sequence_id": ("POST", f"{API}/spans/sequence-ids"),
        "get_many_span_sequence_ids": ("POST", f"{API}/spans/sequence-ids"),
        "query_spans": ("POST", f"{API}/spans/search"),
        "add_resources": ("POST", f"{API}/resources"),
        "update_resources": ("PUT", f"{API}/resources/{{resources_id}}"),
        "get_resources_by_id": ("GET", f"{API}/resources/{{resources_id}}"),
        "get_latest_resources": ("GET", f"{API}/resources/latest"),
        "query_resources": ("POST", f"{API}/resources/search"),
        "query_workers": ("POST", f"{API}/workers/search"),
        "get_worker_by_id": ("GET", f"{API}/workers/{{worker_id}}"),
        "update_worker": ("PATCH", f"{API}/workers/{{worker_id}}"),
        "sync": ("POST", f"{API}/sync"),
        "add_otel_span": ("POST", f"{API}/spans"),  # the client converts the span and adds it
    }
    assert set(LightningStore.__abstractmethods__) <= set(by_method)  # every store operation has a route
    missing = set(by_method.values()) - operations
    assert not missing, missing
    # a 4xx a route can answer is documented
    assert "404" in doc["paths"][f"{API}/rollouts/{{rollout_id}}"]["get"]["responses"]
    json.dumps(doc)  # plain JSON


def test_token_required_on_every_request(serve: Any) -> None:
    server: StoreServer = serve(token="s3cret")
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for method, path in (
            ("GET", f"{API}/health"),
            ("POST", f"{API}/rollouts"),
            ("GET", "/openapi.json"),
        ):
            response = http.request(method, path, json={"input": 1})
            body = _error(response, 401, "Unauthorized", "Authorization")
            assert response.headers["www-authenticate"] == "Bearer", body
        _error(http.get(f"{API}/health", headers={"Authorization": "Bearer wrong"}), 401, "Unauthorized", "wrong")
        ok = http.get(f"{API}/health", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_non_loopback_bind_without_token_is_refused() -> None:
    from agentlightning.errors import InsecureBindError

    for host in ("0.0.0.0", "::", ""):
        with pytest.raises(InsecureBindError, match="without a token"):
            StoreServer(InMemoryLightningStore(), host=host, port=0)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        StoreServer(InMemoryLightningStore(), host=host, port=0)  # accepted (not started)


def test_without_the_server_extra_the_error_says_what_to_install() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "import agentlightning.server as s\n"
        "from agentlightning.store.memory import InMemoryLightningStore\n"
        "try:\n"
        "    s.StoreServer(InMemoryLightningStore(), port=0)\n"
        "except s.ServerDependencyError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "needs fastapi" in result.stdout and 'pip install "agentlightning[server]"' in result.stdout
