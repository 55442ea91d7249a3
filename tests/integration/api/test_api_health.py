"""``GET /v1/health``: no key needed, 200 with the state store up, 503 with it down."""

from __future__ import annotations

from simbdp.state.db import Database


def test_health_is_ok_without_a_key(api):
    r = api.client.get("/v1/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "state_store": "ok"}


def test_health_is_503_when_the_state_store_is_unreachable(api):
    # a PostgreSQL state store on a port nothing listens on: the connection is refused
    api.store.db = Database(dsn="postgresql://simbdp@127.0.0.1:1/none?connect_timeout=2")
    r = api.client.get("/v1/health")
    assert r.status_code == 503
    assert r.json()["status"] == "unavailable"
    assert "unreachable" in r.json()["state_store"]
