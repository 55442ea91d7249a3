"""The operator route that hands a tenant its own broker user."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from fastapi.testclient import TestClient

from simbdp.api.app import create_app
from simbdp.state import StateStore
from simbdp.state.keys import OPERATOR, create_key
from simbdp.testing import make_platform, stream_tenant


def _api(home, tenant, **config):  # type: ignore[no-untyped-def]
    platform = make_platform(home, [stream_tenant(tenant)], **config)
    store = StateStore.open(platform.config)
    keys = {who: create_key(store, who) for who in (tenant, OPERATOR)}
    return TestClient(create_app(platform, store)), {
        who: {"Authorization": f"Bearer {k}"} for who, k in keys.items()}


@pytest.mark.rabbitmq
def test_operator_gets_rotates_and_cannot_get_twice(tmp_path, rabbitmq_url):
    tenant = f"t{uuid.uuid4().hex[:8]}"  # RabbitMQ users are node-wide
    client, h = _api(tmp_path, tenant, broker={"kind": "rabbitmq", "url": rabbitmq_url})
    path = f"/v1/operator/tenants/{tenant}/broker-credentials"
    try:
        assert client.post(path, headers=h[tenant]).status_code == 403
        first = client.post(path, headers=h[OPERATOR])
        assert first.status_code == 200, first.text
        c = first.json()
        assert c["username"] == f"simbdp-{tenant}" and f":{c['password']}@" in c["url"]
        again = client.post(path, headers=h[OPERATOR])
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "credentials_issued"
        assert "rotate" in again.json()["error"]["message"]
        rotated = client.post(path, params={"rotate": "true"}, headers=h[OPERATOR])
        assert rotated.status_code == 200 and rotated.json()["password"] != c["password"]
        for url, works in [(c["url"], False), (rotated.json()["url"], True)]:
            r = subprocess.run(["amqp-publish", "-u", url, "-e", f"simbdp.{tenant}.x", "-r",
                                "in", "-b", '{"id": "x"}'], capture_output=True, text=True)
            assert (r.returncode == 0) is works, r.stderr
        missing = client.post("/v1/operator/tenants/nobody/broker-credentials",
                              headers=h[OPERATOR])
        assert missing.status_code == 404
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_user", f"simbdp-{tenant}"],
                       capture_output=True)


def test_embedded_broker_answers_409_no_broker_users(tmp_path):
    client, h = _api(tmp_path, "acme")
    r = client.post("/v1/operator/tenants/acme/broker-credentials", headers=h[OPERATOR])
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "no_broker_users"
