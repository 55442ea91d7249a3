"""The same contract tests against every broker."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from simbdp.errors import BrokerUnavailable
from simbdp.profiles.platform import BrokerSettings
from simbdp.stream.brokers import OutMessage, open_broker

KINDS = [pytest.param("embedded"),
         pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
         pytest.param("nats", marks=pytest.mark.nats)]


@pytest.fixture(params=KINDS)
def settings(request, tmp_path):  # type: ignore[no-untyped-def]
    kind = request.param
    if kind == "embedded":
        return BrokerSettings(kind="embedded", path=tmp_path, lease_secs=1)
    if kind == "rabbitmq":
        return BrokerSettings(kind="rabbitmq", url=request.getfixturevalue("rabbitmq_url"))
    return BrokerSettings(kind="nats", url=request.getfixturevalue("nats_url"), lease_secs=1)


@pytest.fixture
def prefix(unique_prefix):  # type: ignore[no-untyped-def]
    return unique_prefix


def msgs(n: int, tag: str = "m") -> list[OutMessage]:
    now = time.time()
    return [OutMessage(f"{tag}{i}", f'{{"i": {i}}}'.encode(), now, {"table": "t"})
            for i in range(n)]


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def _broker(settings, prefix):  # type: ignore[no-untyped-def]
    b = open_broker(settings, prefix)
    await b.connect()
    await b.ensure_tenant("acme")
    await b.ensure_tenant("beta")
    return b


async def _drain(b, tenant, n, secs=10.0):  # type: ignore[no-untyped-def]
    got = []
    deadline = time.monotonic() + secs
    while len(got) < n and time.monotonic() < deadline:
        got += await b.fetch(tenant, n - len(got), 0.5)
    return got


def test_publish_fetch_ack_and_isolation(settings, prefix):
    async def go() -> None:
        b = await _broker(settings, prefix)
        try:
            sent = msgs(20)
            await b.publish("acme", sent)
            assert await b.fetch("beta", 10, 0.3) == []  # another tenant sees nothing
            got = await _drain(b, "acme", 20)
            assert [d.id for d in got] == [m.id for m in sent]
            assert got[0].body == sent[0].body and got[0].headers["table"] == "t"
            assert abs(got[0].published_at - sent[0].published_at) < 1e-3
            await b.ack("acme", got)
            assert await b.fetch("acme", 10, 0.5) == []
        finally:
            await b.purge("acme")
            await b.purge("beta")
            await b.close()
    run(go())


def test_nack_and_close_redeliver(settings, prefix):
    async def go() -> None:
        b = await _broker(settings, prefix)
        try:
            await b.publish("acme", msgs(3))
            first = await _drain(b, "acme", 3)
            await b.nack("acme", first[:1])
            again = await _drain(b, "acme", 1)
            assert again[0].id == first[0].id and again[0].redelivered
            await b.ack("acme", again)
            await b.close()  # two deliveries left unacked: they come back to a new consumer
            b2 = await _broker(settings, prefix)
            back = await _drain(b2, "acme", 2, secs=15)
            assert sorted(d.id for d in back) == sorted(d.id for d in first[1:])
            await b2.ack("acme", back)
            await b2.purge("acme")
            await b2.close()
        finally:
            await b.close()
    run(go())


def test_dead_letter_backlog_reports_and_volume(settings, prefix):
    async def go() -> None:
        b = await _broker(settings, prefix)
        try:
            await b.publish("acme", msgs(5000, "v"))
            deadline = time.monotonic() + 10
            while await b.backlog("acme") < 5000 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert await b.backlog("acme") == 5000
            [poison] = await b.fetch("acme", 1, 5)
            await b.dead_letter("acme", poison, "not valid JSON")
            rest: list = []
            deadline = time.monotonic() + 30
            while len(rest) < 4999 and time.monotonic() < deadline:
                got = await b.fetch("acme", 1000, 0.5)  # prefetch bounds what is unacked
                await b.ack("acme", got)
                rest += got
            assert len(rest) == 4999
            [dead] = await b.read_dead_letters("acme")
            assert dead.id == poison.id and dead.headers["x-reason"] == "not valid JSON"
            await b.publish_report({"tenant": "acme", "messages": 7})
            reports = await b.fetch_reports(10, 5)
            assert {"tenant": "acme", "messages": 7} in reports
        finally:
            await b.purge("acme")
            await b.close()
    run(go())


@pytest.mark.rabbitmq
def test_rabbitmq_tenant_credentials_only_reach_their_own_queue(rabbitmq_url, unique_prefix):
    import aio_pika

    async def go() -> None:
        b = open_broker(BrokerSettings(kind="rabbitmq", url=rabbitmq_url), unique_prefix)
        await b.connect()
        creds = await b.issue_credentials("acme")
        await b.ensure_tenant("beta")
        conn = await aio_pika.connect(creds.url)
        ch = await conn.channel(publisher_confirms=True)
        own = await ch.get_exchange(f"{unique_prefix}.acme.x", ensure=False)
        await own.publish(aio_pika.Message(b'{"a": 1}', message_id="x1"), routing_key="in")
        with pytest.raises(Exception) as e:
            other = await ch.get_exchange(f"{unique_prefix}.beta.x", ensure=False)
            await other.publish(aio_pika.Message(b"{}", message_id="x2"), routing_key="in")
        assert "ACCESS_REFUSED" in str(e.value) or "access" in str(e.value).lower()
        await conn.close()
        got = await _drain(b, "acme", 1)
        assert [d.id for d in got] == ["x1"]
        await b.ack("acme", got)
        await b.purge("acme")
        await b.purge("beta")
        await b.close()
    try:
        run(go())
    finally:  # users are node-wide
        subprocess.run(["rabbitmqctl", "-q", "delete_user", f"{unique_prefix}-acme"],
                       capture_output=True)


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_rabbitmq_restart_keeps_messages(rabbitmq_url, unique_prefix):
    async def go() -> None:
        b = open_broker(BrokerSettings(kind="rabbitmq", url=rabbitmq_url), unique_prefix)
        await b.connect()
        await b.ensure_tenant("acme")
        await b.publish("acme", msgs(100, "r"))
        try:
            subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, capture_output=True)
            with pytest.raises(BrokerUnavailable):
                await asyncio.wait_for(b.publish("acme", msgs(1, "down")), 10)
        finally:
            subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, capture_output=True)
        await b.close()
        b2 = open_broker(BrokerSettings(kind="rabbitmq", url=rabbitmq_url), unique_prefix)
        for _ in range(60):
            try:
                await b2.connect()
                break
            except BrokerUnavailable:
                await asyncio.sleep(1)
        got = await _drain(b2, "acme", 100, secs=30)
        assert sorted(d.id for d in got) == sorted(m.id for m in msgs(100, "r"))
        await b2.ack("acme", got)
        await b2.purge("acme")
        await b2.close()
    run(go())


@pytest.mark.nats
def test_nats_confirmed_publish_survives_a_server_sigkill(own_nats, unique_prefix):
    """Acknowledged means on disk: a current nats-server with ``sync_interval: always``,
    SIGKILLed right after the confirmed publish, still has the message once restarted."""
    varz = own_nats.varz()
    assert varz["jetstream"]["config"]["sync_always"] is True, varz["version"]
    settings = BrokerSettings(kind="nats", url=own_nats.url, lease_secs=1)

    async def send() -> None:
        b = open_broker(settings, unique_prefix)
        await b.ensure_tenant("acme")
        await b.publish("acme", msgs(1, "kept"))  # returns once the PubAck came
        own_nats.kill()  # SIGKILL: no shutdown, no flush
        await b.close()
    run(send())
    own_nats.start()  # same store directory

    async def find() -> list[str]:
        b = open_broker(settings, unique_prefix)
        try:
            got = await _drain(b, "acme", 1, secs=10)
            await b.ack("acme", got)
            return [d.id for d in got]
        finally:
            await b.close()
    assert run(find()) == ["kept0"]


@pytest.mark.nats
def test_nats_what_was_pulled_ahead_comes_back_when_the_broker_closes(nats_url, unique_prefix):
    settings = BrokerSettings(kind="nats", url=nats_url, lease_secs=60)

    async def go() -> None:
        a = await _broker(settings, unique_prefix)
        b = await _broker(settings, unique_prefix)
        try:
            await a.publish("acme", msgs(20))
            first = await _drain(a, "acme", 5)
            await asyncio.sleep(0.5)  # the pull made ahead brings the next 5
            await a.close()  # and gives them back: not 60 s later
            rest = await _drain(b, "acme", 15, secs=5)
            assert [d.id for d in first] == [f"m{i}" for i in range(5)]
            assert sorted(d.id for d in rest) == sorted(f"m{i}" for i in range(5, 20))
            await b.ack("acme", rest)
        finally:
            await b.purge("acme")
            await b.purge("beta")
            await b.close()
            await a.close()
    run(go())
