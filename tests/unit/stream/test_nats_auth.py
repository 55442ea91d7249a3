"""The NATS users file: what it keeps, how it is rewritten."""

from __future__ import annotations

import stat

import bcrypt
import pytest

from simbdp.errors import ConfigError
from simbdp.stream.brokers.nats_auth import NatsUsers, tenant_permissions


def test_rewrites_keep_every_user_as_a_hash_and_the_platform_hash_while_it_matches(tmp_path):
    path = tmp_path / "nats" / "auth.conf"
    users = NatsUsers(path, None, "nats://simbdp:platform-pw-1@127.0.0.1:4222")
    users.set_user("simbdp-acme", "s3cret", tenant_permissions("simbdp", "acme", "SIMBDP_ACME"))
    platform_hash = users.users()["simbdp"]["password"]
    users.set_user("simbdp-beta", "other", tenant_permissions("simbdp", "beta", "SIMBDP_BETA"))
    got = users.users()
    assert sorted(got) == ["simbdp", "simbdp-acme", "simbdp-beta"]
    assert got["simbdp"]["password"] == platform_hash and "permissions" not in got["simbdp"]
    assert bcrypt.checkpw(b"s3cret", got["simbdp-acme"]["password"].encode())
    assert got["simbdp-beta"]["permissions"]["publish"]["allow"][0] == "simbdp.beta.>"
    text = path.read_text()
    assert "s3cret" not in text and "platform-pw-1" not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # a new platform password: its hash is replaced, the tenants' stay
    NatsUsers(path, None, "nats://simbdp:new@127.0.0.1:4222").write()
    again = NatsUsers(path, None, "nats://simbdp:new@127.0.0.1:4222").users()
    assert bcrypt.checkpw(b"new", again["simbdp"]["password"].encode())
    assert again["simbdp-acme"] == got["simbdp-acme"]


def test_permissions_name_only_the_tenants_own_subjects():
    p = tenant_permissions("simbdp", "acme", "SIMBDP_ACME")
    allowed = p["publish"]["allow"] + p["subscribe"]["allow"]
    assert all("acme" in s or "ACME" in s for s in allowed)
    assert "_INBOX.>" not in allowed and not any(s.startswith("$JS.API.>") for s in allowed)


def test_platform_url_without_a_user_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="must carry the platform user"):
        NatsUsers(tmp_path / "auth.conf", None, "nats://127.0.0.1:4222")


def test_reload_without_a_running_server_says_so(tmp_path):
    users = NatsUsers(tmp_path / "auth.conf", tmp_path / "missing.pid", "nats://u:p@h:4222")
    assert users.reload() is False
