"""Tenants' own RabbitMQ users: their own exchange only, a secret shown once, rotation."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid

import aio_pika
import aiormq
import pytest

from simbdp.errors import ConfigError, CredentialsIssued
from simbdp.stream.brokers import TenantCredentials
from simbdp.stream.client import issue_broker_credentials
from simbdp.testing import stream_tenant


def amqp_publish(url: str, exchange: str, routing_key: str, body: dict
                 ) -> subprocess.CompletedProcess[str]:
    """The tenant's own client: amqp-tools' amqp-publish (no message id, no simbdp header)."""
    return subprocess.run(["amqp-publish", "-u", url, "-e", exchange, "-r", routing_key, "-p",
                           "-b", json.dumps(body)], capture_output=True, text=True, timeout=30)


@pytest.fixture
def tenants():  # type: ignore[no-untyped-def]
    # RabbitMQ users are node-wide: names of this test's own, deleted after
    names = [f"a{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"]
    yield names
    for t in names:
        subprocess.run(["rabbitmqctl", "-q", "delete_user", f"simbdp-{t}"], capture_output=True)


@pytest.mark.rabbitmq
def test_tenant_publishes_with_its_own_user_to_its_own_queue_only(make_stream_env,
                                                                  rabbitmq_url, tenants):
    a, b = tenants
    env = make_stream_env([stream_tenant(a), stream_tenant(b)],
                          broker={"kind": "rabbitmq", "url": rabbitmq_url})
    creds = asyncio.run(issue_broker_credentials(env.platform, a))
    assert creds.username == f"simbdp-{a}" and creds.password in creds.url
    assert creds.url.endswith(f"@127.0.0.1:5672/{rabbitmq_url.rsplit('/', 1)[1]}")
    with pytest.raises(CredentialsIssued, match="--rotate"):
        asyncio.run(issue_broker_credentials(env.platform, a))

    ok = amqp_publish(creds.url, f"simbdp.{a}.x", "in", {"id": "c1", "n": 1})
    assert ok.returncode == 0, ok.stderr
    env.publish(b, [{"id": "b1", "n": 1}], id_field="id")  # b's exchange and queue exist
    for exchange, key in [(f"simbdp.{b}.x", "in"), ("amq.default", f"simbdp.{b}.in"),
                          ("", f"simbdp.{b}.in")]:
        refused = amqp_publish(creds.url, exchange, key, {"id": "evil", "n": 666})
        assert refused.returncode != 0 and "ACCESS_REFUSED" in refused.stderr, (exchange, key)

    # publishing through simbdp uses the platform user: the tenant's secret keeps working
    env.publish(a, [{"id": "p1", "n": 2}], id_field="id")
    again = amqp_publish(creds.url, f"simbdp.{a}.x", "in", {"id": "c2", "n": 3})
    assert again.returncode == 0, again.stderr
    env.drain(a)
    assert env.count(a) == 3  # c1, p1, c2: consumed and ingested by simbdp
    assert env.count(b) == 0

    async def rotate_under_an_open_connection() -> TenantCredentials:
        conn = await aio_pika.connect(creds.url)
        x = await (await conn.channel()).get_exchange(f"simbdp.{a}.x", ensure=False)
        rotated = await issue_broker_credentials(env.platform, a, rotate=True)
        await asyncio.sleep(0.5)
        with pytest.raises(aiormq.exceptions.ChannelInvalidStateError):  # closed by the broker
            await x.publish(aio_pika.Message(b'{"id": "c5", "n": 9}'), routing_key="in")
        return rotated
    new = asyncio.run(rotate_under_an_open_connection())
    assert new.password != creds.password
    stale = amqp_publish(creds.url, f"simbdp.{a}.x", "in", {"id": "c3", "n": 4})
    assert stale.returncode != 0 and "ACCESS_REFUSED" in stale.stderr
    fresh = amqp_publish(new.url, f"simbdp.{a}.x", "in", {"id": "c4", "n": 5})
    assert fresh.returncode == 0, fresh.stderr
    env.drain(a)
    assert env.count(a) == 4


def test_embedded_broker_has_no_tenant_users(make_stream_env):
    env = make_stream_env()
    with pytest.raises(ConfigError, match="embedded broker has no broker users"):
        asyncio.run(issue_broker_credentials(env.platform, "acme"))


@pytest.mark.rabbitmq
def test_cli_prints_the_secret_once_and_rotates(make_stream_env, rabbitmq_url, tenants):
    from typer.testing import CliRunner

    from simbdp.cli.main import app

    a = tenants[0]
    env = make_stream_env([stream_tenant(a)], broker={"kind": "rabbitmq", "url": rabbitmq_url})
    cmd = ["tenants", "broker-credentials", a, "--home", str(env.config.home)]
    first = CliRunner().invoke(app, cmd)
    assert first.exit_code == 0, first.output
    url = next(ln.split()[1] for ln in first.stdout.splitlines() if ln.startswith("url:"))
    assert amqp_publish(url, f"simbdp.{a}.x", "in", {"id": "x", "n": 1}).returncode == 0
    again = CliRunner().invoke(app, cmd)
    assert again.exit_code == 1 and "--rotate" in again.output
    rotated = CliRunner().invoke(app, [*cmd, "--rotate"])
    assert rotated.exit_code == 0 and url not in rotated.stdout
    assert amqp_publish(url, f"simbdp.{a}.x", "in", {"id": "y", "n": 2}).returncode != 0
