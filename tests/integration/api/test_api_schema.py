"""A schemathesis run over the OpenAPI schema: no 500s, responses match the schema."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from simbdp.api.app import create_app
from simbdp.state import StateStore
from simbdp.state.keys import OPERATOR, create_key
from simbdp.testing import make_platform, stream_tenant, tenant_profile

_home = Path(tempfile.mkdtemp(prefix="simbdp-schema-"))
_platform = make_platform(_home, [tenant_profile("acme"), stream_tenant("beta")])
_store = StateStore.open(_platform.config)
_app = create_app(_platform, _store)
_KEY = create_key(_store, OPERATOR)

schema = schemathesis.openapi.from_asgi("/openapi.json", _app)


@schema.parametrize()
@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_no_server_errors_and_schema_conformance(case):  # type: ignore[no-untyped-def]
    # Starlette answers 405 per route, so a path with GET and POST routes lists one method in
    # Allow: a framework trait, not ours to check here
    case.call_and_validate(headers={"Authorization": f"Bearer {_KEY}"},
                           excluded_checks=[checks.unsupported_method,
                                            checks.allow_header_conformance,
                                            # profiles have cross-field rules (an app's tables
                                            # must exist) that JSON Schema cannot say
                                            checks.positive_data_acceptance])
