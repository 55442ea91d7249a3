"""The publish route: a retried request loads once (content-hash ids by default, or the
``Idempotency-Key`` header), and a broker outage is a retryable 503."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time

import pytest

from simbdp.stream.brokers import open_broker
from simbdp.stream.consumer import StreamInstance

PATH = "/v1/tenants/beta/messages"


def batch(n: int, note: str = "x") -> list[dict]:
    return [{"id": f"m{i}", "n": i, "note": note} for i in range(n)]


def drain(api) -> int:  # type: ignore[no-untyped-def]
    """Consume beta's queue with one instance until it is empty; the messages it ingested
    (repeats of committed ids are skipped, not counted; the table's primary key would hide
    duplicate rows)."""
    platform = api.platform

    async def go() -> int:
        stop = asyncio.Event()
        inst = StreamInstance(platform, "beta", "ev", "t-1", open_broker(platform.config.broker))
        task = asyncio.create_task(inst.run(stop))
        probe = open_broker(platform.config.broker)
        deadline = time.monotonic() + 20
        await asyncio.sleep(0.3)
        while time.monotonic() < deadline and await probe.backlog("beta") > 0:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        stop.set()
        await task
        reports = await probe.fetch_reports(1000, 0.1)
        await probe.close()
        return sum(r["messages"] for r in reports)
    return asyncio.run(go())


def test_a_retried_request_loads_once(api):
    for _ in range(2):  # the client did not see the first answer and sends it again
        r = api.client.post(PATH, json=batch(30), headers=api.h("beta"))
        assert r.status_code == 200, r.text
    assert drain(api) == 30
    # other content is other messages, even with the same values in another order
    r = api.client.post(PATH, json=batch(30)[::-1], headers=api.h("beta"))
    assert r.status_code == 200
    assert drain(api) == 30


def test_idempotency_key_names_the_messages(api):
    key = {**api.h("beta"), "Idempotency-Key": "order-run-7"}
    assert api.client.post(PATH, json=batch(10), headers=key).status_code == 200
    # the same key again: the same ids, whatever the bodies (a client regenerated them)
    assert api.client.post(PATH, json=batch(10, "y"), headers=key).status_code == 200
    assert drain(api) == 10
    other = {**api.h("beta"), "Idempotency-Key": "order-run-8"}
    assert api.client.post(PATH, json=batch(10), headers=other).status_code == 200
    assert drain(api) == 10
    too_long = {**api.h("beta"), "Idempotency-Key": "k" * 201}
    assert api.client.post(PATH, json=batch(1), headers=too_long).status_code == 422


def test_broker_down_is_a_retryable_503(make_api):
    with socket.socket() as s:  # a port nothing listens on: the broker is away
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = make_api(broker={"kind": "rabbitmq", "url": f"amqp://guest:guest@127.0.0.1:{port}/"})
    r = api.client.post(PATH, json=batch(3), headers=api.h("beta"))
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == "5"
    err = r.json()["error"]
    assert err["code"] == "broker_unavailable"
    assert "'beta'" in err["message"] and "retry" in err["message"]


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_rabbitmq_restart_503_then_the_retry_loads_once(make_api, rabbitmq_url):
    api = make_api(broker={"kind": "rabbitmq", "url": rabbitmq_url})
    assert api.client.post(PATH, json=batch(5), headers=api.h("beta")).status_code == 200
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, capture_output=True)
    try:
        r = api.client.post(PATH, json=batch(20, "z"), headers=api.h("beta"))
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) > 0
    finally:
        subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while True:  # the client retries as told until the broker is back
        r = api.client.post(PATH, json=batch(20, "z"), headers=api.h("beta"))
        if r.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(float(r.headers["Retry-After"]) / 5)
    assert r.status_code == 200, r.text
    assert api.client.post(PATH, json=batch(20, "z"), headers=api.h("beta")).status_code == 200
    assert drain(api) == 25  # the first 5, then the 20 once
