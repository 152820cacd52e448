"""Property-based fuzzing of every endpoint from the OpenAPI schema (schemathesis): no 5xx,
and every answer matches the schema the API declares, against a real server on loopback: one
serving an ID-only bundle (writes answer 409) and one whose bundle places new items (the fuzzed
writes are encoded and journaled)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from lmmrec.serving.background import BackgroundServer

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402


@pytest.mark.parametrize("server", ["live_server", "writable_server"])
def test_no_endpoint_fails_or_breaks_its_schema(
    server: str, request: pytest.FixtureRequest
) -> None:
    live_server: BackgroundServer = request.getfixturevalue(server)
    schema = schemathesis.openapi.from_url(live_server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} == {
        "/health",
        "/metadata",
        "/recommend",
        "/similar",
        "/session",
        "/items",
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
            # a write's content can be schema-valid yet not an item (random base64 that is no
            # image, a blank text): JSON Schema cannot say so, the 422 names the field instead
            writes = case.operation.path == "/items"
            case.call_and_validate(excluded_checks=[positive_data_acceptance] if writes else [])

        call()
