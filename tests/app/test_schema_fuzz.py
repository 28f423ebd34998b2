"""A property-based run over the OpenAPI schema (Schemathesis, fixed seed): valid and invalid requests
to every operation, with the admin key; no answer may be a 5xx, and every answer must match the
schema (problem+json for errors, see ``app/openapi.py``). Bounded to about two minutes on two cores
(``MAX_EXAMPLES`` per operation and generation mode). It runs in the ordinary suite; it needs the
``schemathesis`` package (the ``dev`` extra); without it the test fails rather than skipping. Every failure is collected
and reported at the end, one line per operation and check."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.conftest import ADMIN_KEY

MAX_EXAMPLES = 25
SEED = 20261201
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _runner(operation, mode, failures: dict[str, str], counter: list[int]):  # type: ignore[no-untyped-def]
    """A hypothesis test of one operation in one generation mode, recording the first failure of each."""
    where = f"{operation.method.upper()} {operation.path} ({mode.value})"

    @seed(SEED)
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):  # type: ignore[no-untyped-def]
        counter[0] += 1
        try:
            response = case.call(headers=AUTH)  # the test client re-raises what would be a 500
            case.validate_response(response, checks=CHECKS, headers=AUTH)
        except (Exception, BaseExceptionGroup) as exc:
            lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
            failures.setdefault(where, f"{type(exc).__name__}: {' | '.join(lines[:6])[:400]}")

    return run


def test_no_input_answers_5xx_or_breaks_the_schema(app):  # type: ignore[no-untyped-def]
    api = schemathesis.openapi.from_asgi("/openapi.json", app)
    api.config.generation.update(allow_x00=True)
    failures: dict[str, str] = {}
    counter = [0]
    operations = [result.ok() for result in api.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _runner(operation, mode, failures, counter)()
    print(f"{counter[0]} cases over {len(operations)} operations, {len(failures)} failing")
    assert not failures, "\n".join(f"{k}: {v}" for k, v in sorted(failures.items()))
