"""Property-based requests against every operation of the published OpenAPI schema (schemathesis).

Bounded so that it runs in CI in well under a minute: a fixed number of generated cases per operation and
mode (valid inputs, and inputs that break the schema), derandomised so a failure reproduces. Each response
must not be a server error, and must match the status codes, content types and bodies the schema
documents. The hand-written regression cases of ``test_hostile_inputs.py`` cover what such a run found.

Schemathesis' own pytest integration does not run under this pytest; its Hypothesis strategies are driven
directly instead, one operation after another, and every failure is collected before the test fails.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.services

CASES = {GenerationMode.POSITIVE: 15, GenerationMode.NEGATIVE: 15}  # per operation
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_every_operation_answers_as_documented(app, make_key, tiny_model: str) -> None:  # type: ignore[no-untyped-def]
    schema = schemathesis.openapi.from_asgi("/v1/openapi.json", app)
    headers = {"Authorization": f"Bearer {make_key('schemathesis')}"}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    for operation in operations:
        for mode, count in CASES.items():

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=count,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],  # reported as generated, without shrinking
                suppress_health_check=list(HealthCheck),
            )
            def check(case) -> None:  # type: ignore[no-untyped-def]
                case.call_and_validate(headers=headers, checks=CHECKS)

            try:
                check()
            except Unsatisfiable:  # nothing can break the schema of an operation that takes no input
                assert mode is GenerationMode.NEGATIVE and not operation.path_parameters, operation.label
            except BaseException as error:  # schemathesis raises groups of failures; all are collected
                if isinstance(error, (KeyboardInterrupt, SystemExit)):
                    raise
                failures.append(f"{operation.label} ({mode.value}): {type(error).__name__}: {error}"[:2000])
    assert not failures, "\n\n".join(failures)
