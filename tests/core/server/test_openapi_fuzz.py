"""Schemathesis against the server's own OpenAPI document: no 5xx and no response that breaks the schema.

Bounded: a few examples per operation and a time budget for the whole run, so it stays a quick
smoke test; ``AGL_FUZZ_EXAMPLES`` raises the number of examples for a longer run.
"""

from __future__ import annotations

import os
import time
from typing import Any, List

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agentlightning.server import StoreServer  # noqa: E402
from agentlightning.store.memory import InMemoryLightningStore  # noqa: E402

EXAMPLES = int(os.environ.get("AGL_FUZZ_EXAMPLES", "4"))
BUDGET_SECONDS = float(os.environ.get("AGL_FUZZ_SECONDS", "20"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_no_server_errors_and_no_schema_violations(serve: Any) -> None:
    backing = InMemoryLightningStore()
    server: StoreServer = serve(backing, max_body_bytes=1 << 20)
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if op.path != "/v1/traces"]  # binary protobuf: tested in test_otlp_ingest
    assert len(operations) >= 25
    deadline = time.monotonic() + BUDGET_SECONDS
    tested: List[str] = []
    for operation in operations:
        if time.monotonic() > deadline:
            break

        positive = operation.as_strategy()
        negative = operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE)

        @given(case=positive | negative)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            # invalid requests (negative mode) must get a 4xx, which the schema documents: same checks
            case.call_and_validate(base_url=server.url, checks=CHECKS)

        check()
        tested.append(f"{operation.method.upper()} {operation.path}")
    assert len(tested) >= len(operations) // 2, f"time budget too small: only {tested}"
