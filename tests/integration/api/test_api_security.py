"""Authentication, isolation between tenants and hostile input: each case a test."""

from __future__ import annotations

import hashlib

import pytest

from simbdp.state import today
from simbdp.state.keys import revoke_key

TENANT_B_RESOURCES = [
    ("get", "/v1/tenants/beta/profile", None),
    ("get", "/v1/tenants/beta/quota", None),
    ("get", "/v1/tenants/beta/records", None),
    ("put", "/v1/tenants/beta/files/x.csv", b"a\n1\n"),
    ("post", "/v1/tenants/beta/messages", [{"id": "1"}]),
    ("post", "/v1/tenants/beta/streams/ev", {"instances": 1}),
    ("get", "/v1/tenants/beta/tables/events/rows", None),
]


def call(api, method, path, body, headers):  # type: ignore[no-untyped-def]
    kw = {"content": body} if isinstance(body, bytes) else {"json": body} if body else {}
    return getattr(api.client, method)(path, headers=headers, **kw) if kw else \
        getattr(api.client, method)(path, headers=headers)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sbdp_nope_nope"},
                                     {"Authorization": "Basic abc"}, {"X-API-Key": "junk"}])
def test_missing_or_wrong_key_is_401(api, headers):
    r = api.client.get("/v1/tenants/acme/profile", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] in ("missing_key", "invalid_key")


def test_revoked_key_is_401(api):
    assert api.client.get("/v1/tenants/acme/profile", headers=api.h("acme")).status_code == 200
    revoke_key(api.store, api.keys["acme"].split("_")[1])
    assert api.client.get("/v1/tenants/acme/profile", headers=api.h("acme")).status_code == 401


@pytest.mark.parametrize(("method", "path", "body"), TENANT_B_RESOURCES)
def test_tenant_a_key_on_tenant_b_is_404_without_leak(api, method, path, body):
    r = call(api, method, path, body, api.h("acme"))
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    assert "events" not in r.text and "ev" not in r.json()["error"]["message"].split()


@pytest.mark.parametrize("path", ["/v1/operator/tenants", "/v1/operator/records",
                                  "/v1/operator/streams", "/v1/operator/report"])
def test_operator_endpoints_refuse_tenant_keys(api, path):
    assert api.client.get(path, headers=api.h("acme")).status_code == 403
    assert api.client.get(path, headers=api.h("op")).status_code == 200


@pytest.mark.parametrize("name", ["..%2F..%2Fetc%2Fpasswd.csv", "a..b.csv", "x%00.csv",
                                  "%2Fetc%2Fx.csv", "a" * 300 + ".csv"])
def test_bad_upload_names(api, name):
    r = api.client.put(f"/v1/tenants/acme/files/{name}", content=b"a\n1\n",
                       headers=api.h("acme"))
    assert r.status_code in (400, 404), r.text
    assert api.staged() == []


@pytest.mark.parametrize("name", [".hidden.csv", "c.csv.part", "c.csv.tmp", "c.csv~"])
def test_names_staging_ignores_are_refused_with_a_reason(api, name):
    r = api.client.put(f"/v1/tenants/acme/files/{name}", content=b"a\n1\n",
                       headers=api.h("acme"))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "bad_name" and name in err["message"]
    assert "never be ingested" in err["message"]
    assert api.staged() == []
    assert api.store.usage("acme", today())["files"] == 0


def test_body_over_limit_is_413_and_nothing_kept(api):
    r = api.client.put("/v1/tenants/acme/files/big.csv", content=b"x" * 200_000,
                       headers=api.h("acme"))
    assert r.status_code == 413
    assert api.staged() == []


def test_streamed_body_over_limit_without_length(api):
    def gen():  # type: ignore[no-untyped-def]
        for _ in range(30):
            yield b"x" * 10_000
    r = api.client.put("/v1/tenants/acme/files/big.csv", content=gen(), headers=api.h("acme"))
    assert r.status_code == 413
    assert api.staged() == []


def test_wrong_checksum_is_422(api):
    r = api.client.put("/v1/tenants/acme/files/c.csv", content=b"a\n1\n",
                       headers={**api.h("acme"), "X-Content-SHA256": "0" * 64})
    assert r.status_code == 422 and r.json()["error"]["code"] == "checksum_mismatch"
    assert api.staged() == []


def test_good_upload_lands_in_staging(api):
    body = b"id,subreddit\n1,python\n"
    r = api.client.put("/v1/tenants/acme/files/c.csv", content=body,
                       headers={**api.h("acme"),
                                "X-Content-SHA256": hashlib.sha256(body).hexdigest()})
    assert r.status_code == 202, r.text
    assert (api.platform.config.staging_dir("acme") / "c.csv").read_bytes() == body


def test_wrong_file_type_is_415(api):
    r = api.client.put("/v1/tenants/acme/files/c.xml", content=b"<x/>", headers=api.h("acme"))
    assert r.status_code == 415


@pytest.mark.parametrize(("method", "path"), [
    ("post", "/v1/tenants/beta/messages"), ("post", "/v1/tenants/beta/streams/ev"),
    ("post", "/v1/operator/tenants")])
def test_malformed_json_is_a_clear_422(api, method, path):
    who = "op" if "operator" in path else "beta"
    r = getattr(api.client, method)(path, content=b"{not json",
                                    headers={**api.h(who), "Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request"


def test_rate_limit_429_with_retry_after(make_api):
    api = make_api(api={"requests_per_minute": 3})
    codes = [api.client.get("/v1/tenants/acme/quota", headers=api.h("acme")).status_code
             for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3] == 429
    r = api.client.get("/v1/tenants/acme/quota", headers=api.h("acme"))
    assert int(r.headers["Retry-After"]) >= 1


def test_publish_and_stream_control_through_the_api(api):
    import asyncio

    from simbdp.stream.brokers import open_broker

    r = api.client.post("/v1/tenants/beta/messages?id_field=id",
                        json=[{"id": "m1", "n": 1}, {"id": "m2", "n": 2}], headers=api.h("beta"))
    assert r.status_code == 200 and r.json() == {"published": 2}
    big = api.client.post("/v1/tenants/beta/messages", json=[{"x": "y" * 5000}],
                          headers=api.h("beta"))
    assert big.status_code == 413

    async def backlog() -> int:
        b = open_broker(api.platform.config.broker)
        n = await b.backlog("beta")
        await b.close()
        return n
    assert asyncio.run(backlog()) == 2
    r = api.client.post("/v1/tenants/beta/streams/ev", json={"instances": 2},
                        headers=api.h("beta"))
    assert r.status_code == 200
    assert api.store.desired()[0]["instances"] == 2
    assert api.store.decisions("beta")[0]["reason"].startswith("requested through the API")
    too_many = api.client.post("/v1/tenants/beta/streams/ev", json={"instances": 99},
                               headers=api.h("beta"))
    assert too_many.status_code == 422
