"""Tenants' own NATS users, on a nats-server of this test's own (not the shared one on 4222):
own subjects and stream only, added and rotated by a reload, never a restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.errors import Error as NatsError
from nats.js.errors import ServiceUnavailableError

from simbdp.errors import BrokerUnavailable, CredentialsIssued
from simbdp.stream.brokers import TenantCredentials
from simbdp.stream.client import issue_broker_credentials
from simbdp.testing import missing, stream_tenant

pytestmark = pytest.mark.nats
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


class OwnServer:
    """A nats-server with JetStream whose config includes simbdp's users file."""

    def __init__(self, folder: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.folder, self.auth, self.pid_file = folder, folder / "auth.conf", folder / "nats.pid"
        self.conf = folder / "server.conf"
        self.conf.write_text(f'listen: "127.0.0.1:{self.port}"\npid_file: "{self.pid_file}"\n'
                             f'jetstream {{ store_dir: "{folder / "js"}" }}\n'
                             'include "auth.conf"\n')  # nats-server includes relative paths only
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([NATS_SERVER, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                if self.pid_file.exists():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"own nats-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[OwnServer]:
    if not os.path.exists(NATS_SERVER):
        missing("nats-server is not installed")
    folder = tmp_path / "nats"
    folder.mkdir()
    server = OwnServer(folder)
    yield server
    server.stop()


async def _as_tenant(creds: TenantCredentials, errors: list[str]) -> nats.NATS:
    async def on_error(e: Exception) -> None:
        errors.append(str(e))
    return await nats.connect(creds.url, inbox_prefix=creds.inbox_prefix, error_cb=on_error,
                              allow_reconnect=False, connect_timeout=3)


async def _refused(coro: object, errors: list[str], what: str) -> None:
    """The server answers a forbidden publish or subscribe with an asynchronous
    'Permissions Violation' (and no reply, so a request times out)."""
    with contextlib.suppress(TimeoutError, NatsError):
        await asyncio.wait_for(coro, 2)  # type: ignore[arg-type]
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not any(what.lower() in e.lower() for e in errors):
        await asyncio.sleep(0.05)
    assert any("permissions violation" in e.lower() and what.lower() in e.lower()
               for e in errors), (what, errors)
    errors.clear()


def test_tenant_users_reach_only_their_own_subjects_and_stream(make_stream_env, own_server):
    platform_url = f"nats://simbdp:platform-secret@127.0.0.1:{own_server.port}"
    env = make_stream_env(
        [stream_tenant("acme"), stream_tenant("beta"), stream_tenant("gamma")],
        broker={"kind": "nats", "url": platform_url, "lease_secs": 2,
                "nats_auth_file": str(own_server.auth),
                "nats_pid_file": str(own_server.pid_file)})
    issue = lambda t, **kw: asyncio.run(issue_broker_credentials(env.platform, t, **kw))  # noqa: E731

    # before the server runs: the users file is written with the platform user, nothing more
    with pytest.raises(BrokerUnavailable, match="start nats-server"):
        issue("acme")
    assert stat.S_IMODE(own_server.auth.stat().st_mode) == 0o600
    own_server.start()
    acme, beta = issue("acme"), issue("beta")
    text = own_server.auth.read_text()
    assert "$2" in text and acme.password not in text and "platform-secret" not in text
    with pytest.raises(CredentialsIssued):
        issue("acme")

    async def as_acme() -> None:
        with pytest.raises(NatsError):  # no anonymous access any more
            await nats.connect(f"nats://127.0.0.1:{own_server.port}", allow_reconnect=False,
                               connect_timeout=3, error_cb=_ignore)
        errors: list[str] = []
        nc = await _as_tenant(acme, errors)
        js = nc.jetstream()
        ack = await js.publish("simbdp.acme.in", b'{"id": "a1", "n": 1}',
                               headers={"Nats-Msg-Id": "a1"})
        assert ack.stream == "SIMBDP_ACME"
        # its own stream; JetStream may take a moment to answer again after a reload
        for _ in range(50):
            try:
                info = await js.stream_info("SIMBDP_ACME")
                break
            except ServiceUnavailableError:
                await asyncio.sleep(0.1)
        assert info.state.messages == 1
        await _refused(js.publish("simbdp.beta.in", b'{"id": "x", "n": 6}'), errors,
                       '"simbdp.beta.in"')
        await _refused(nc.subscribe("simbdp.beta.in"), errors, '"simbdp.beta.in"')
        await nc.flush()
        await _refused(nc.subscribe("_INBOX.>"), errors, '"_INBOX.>"')
        await _refused(js.stream_info("SIMBDP_BETA"), errors, "SIMBDP_BETA")
        await _refused(nc.request("$JS.API.CONSUMER.MSG.NEXT.SIMBDP_BETA.ingest", b"1"),
                       errors, "SIMBDP_BETA")
        await _refused(js.delete_stream("SIMBDP_ACME"), errors, "STREAM.DELETE")
        await nc.close()
    asyncio.run(as_acme())

    env.drain("acme")  # the platform ingests what acme's own client published
    assert env.count("acme") == 1 and env.count("beta") == 0
    assert env.dead_letters("beta") == []

    async def acme_reads_its_own_stream() -> None:
        errors: list[str] = []
        nc = await _as_tenant(acme, errors)
        js = nc.jetstream()
        await js.publish("simbdp.acme.in", b'{"id": "a2", "n": 2}')
        sub = await js.pull_subscribe_bind("ingest", "SIMBDP_ACME")  # the platform's consumer
        [m] = await sub.fetch(1, timeout=5)
        assert m.data == b'{"id": "a2", "n": 2}'
        await m.nak()  # back to the platform
        assert (await sub.consumer_info()).num_ack_pending <= 1
        await nc.close()
        assert errors == []
    asyncio.run(acme_reads_its_own_stream())
    env.drain("acme")
    assert env.count("acme") == 2

    # a third tenant's user works after a reload, without a restart
    pid = own_server.proc.pid  # type: ignore[union-attr]
    gamma = issue("gamma")
    assert own_server.proc.poll() is None and int(own_server.pid_file.read_text()) == pid

    async def as_gamma_then_rotated_acme() -> None:
        errors: list[str] = []
        nc = await _as_tenant(gamma, errors)
        await nc.jetstream().publish("simbdp.gamma.in", b'{"id": "g1", "n": 1}')
        await _refused(nc.publish("simbdp.acme.in", b"{}"), errors, '"simbdp.acme.in"')
        await nc.close()
        before = await _as_tenant(acme, errors)
        new = await issue_broker_credentials(env.platform, "acme", rotate=True)
        with pytest.raises(NatsError):
            await _as_tenant(acme, errors)
        deadline = time.monotonic() + 5  # the reload closes the old secret's connections too
        while not before.is_closed and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert before.is_closed
        await (await _as_tenant(new, errors)).close()
        await (await _as_tenant(beta, errors)).close()  # others untouched by the rewrite
    asyncio.run(as_gamma_then_rotated_acme())
    env.drain("gamma")
    assert env.count("gamma") == 1


async def _ignore(_: Exception) -> None:
    pass
