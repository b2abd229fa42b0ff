"""The ingest's own OpenAPI document, fuzzed by schemathesis against the running ingest: no
request it makes, valid or not, gets a 5xx, and every answer is one the document describes.

The document is read from the running ingest (what clients get), and each operation is fuzzed
with a bounded number of examples through schemathesis's Python API. (Its pytest plugin's lazy
fixtures do not work with this pytest.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import INGEST_TOKENS

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 30  # per operation and mode: some 500 requests, a few seconds


def test_no_request_gets_a_server_error_and_every_answer_is_documented(ingest_process, redis_client):
    schema = schemathesis.openapi.from_url(f"{ingest_process.root}/openapi.json")
    headers = {"Authorization": f"Bearer {INGEST_TOKENS['all']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 8  # four purges, the environment list, receipts, health, ready
    failures = []
    # Negative data for the operations that take any (health and ready take none).
    cases = [(o, m) for o in operations for m in GenerationMode
             if m is GenerationMode.POSITIVE or len(o.path_parameters) or o.body]
    assert len(cases) == 8 + 6
    for operation, mode in cases:

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            # Not "schema-valid data is accepted": the schema says "a list of strings" where
            # the ingest, like Cloudflare, refuses a string that is no URL (400, by design).
            case.call_and_validate(base_url=ingest_process.root, headers=headers,
                                   excluded_checks=[positive_data_acceptance])

        try:
            fuzz()
        except Exception as exc:  # noqa: BLE001 - collected, to report every operation
            failures.append(f"{operation.label} ({mode} data): {exc}")
    assert failures == [], "\n\n".join(failures)
