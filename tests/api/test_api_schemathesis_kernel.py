"""Property-based run against the OpenAPI document `kprobe serve` serves (schemathesis, on the demo's data).

Every operation gets generated requests, valid ones and (negative mode) invalid ones; no answer may
be a 5xx, carry an undocumented status code or content type, or break its documented schema.
Driven through schemathesis' Python API with hypothesis directly: its pytest plugin does not run
under the pytest this project uses.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import TOKEN, Served

pytestmark = pytest.mark.kernel
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
EXAMPLES = 40


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_no_5xx_and_no_schema_violation(served: Served, mode: schemathesis.GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(served.url + "/api/v1/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 10
    calls = 0
    for op in ops:
        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(base_url=served.url, headers={"Authorization": f"Bearer {TOKEN}"},
                                   checks=CHECKS)

        run()
    assert calls >= len(ops)
