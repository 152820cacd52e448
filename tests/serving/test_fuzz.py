"""Property-based fuzzing of every endpoint from the OpenAPI schema (schemathesis): no 5xx,
and every answer matches the schema the API declares, against a real server on loopback."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from serving_fixtures import LiveServer

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")


def test_no_endpoint_fails_or_breaks_its_schema(live_server: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(live_server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} == {
        "/health",
        "/metadata",
        "/recommend",
        "/similar",
        "/session",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40,
            derandomize=True,  # the same examples on every run
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate()

        call()
