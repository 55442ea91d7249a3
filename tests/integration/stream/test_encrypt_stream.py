"""Encrypted messages (Tink Aead, key id in the ciphertext) through the real stream path:
opened in the decode step; an unknown key id, a tampered body or no keyset dead-letters the
message with the reason, still sealed."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from simbdp.crypto.keyset import (
    load_keyset,
    new_keyset,
    read_keyset_doc,
    rotate_keyset,
    save_keyset,
)
from simbdp.crypto.messages import ENCRYPTION_HEADER, encrypt_messages, key_id
from simbdp.stream.brokers.base import OutMessage
from simbdp.stream.client import make_messages, publish_jsonl
from simbdp.testing import stream_tenant


def _rows(n: int, start: int = 0, note: str = "hello") -> list[dict[str, Any]]:
    return [{"id": f"e{i}", "n": i, "note": note} for i in range(start, start + n)]


def _sealed(keyset_path, rows, prefix: str) -> list[OutMessage]:  # type: ignore[no-untyped-def]
    ks = load_keyset(keyset_path, "acme")
    return encrypt_messages(ks, make_messages(rows, id_prefix=prefix))


def _env(make_stream_env, **kw: Any):  # type: ignore[no-untyped-def]
    tenant = stream_tenant() | {"encryption": {"keyset": "keys/acme.json"}}
    env = make_stream_env([tenant], **kw)
    path = env.config.home / "keys" / "acme.json"
    save_keyset(new_keyset(), path)
    return env, path


def _publish(env, msgs: list[OutMessage]) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from simbdp.stream.client import publish

    asyncio.run(publish(env.platform, "acme", msgs))


def _check_bad_cases(env, keyset, tmp_path) -> None:  # type: ignore[no-untyped-def]
    old = tmp_path / "old.json"
    save_keyset(read_keyset_doc(keyset), old)
    save_keyset(rotate_keyset(read_keyset_doc(keyset)), keyset, overwrite=True)
    stranger = tmp_path / "stranger.json"
    save_keyset(new_keyset(), stranger)
    secret = "top-secret-note"
    good_old = _sealed(old, _rows(50, note=secret), "old")
    good_new = _sealed(keyset, _rows(50, 50, note=secret), "new")
    unknown = _sealed(stranger, _rows(1, 900, note=secret), "unknown")
    [tampered] = _sealed(keyset, _rows(1, 901, note=secret), "tampered")
    body = bytearray(tampered.body)
    body[-3] ^= 0x01
    tampered = dataclasses.replace(tampered, body=bytes(body))
    # sealed (the header says so) and then sealed JSON that is not an object
    [not_object] = _sealed(keyset, [b"[1, 2]"], "array")
    _publish(env, good_old + good_new + unknown + [tampered, not_object])
    env.drain()
    assert env.count() == 100
    dead = {d.id: d for d in env.dead_letters()}
    assert set(dead) == {"unknown:0", "tampered:0", "array:0"}
    reasons = {i: d.headers["x-reason"] for i, d in dead.items()}
    kid = key_id(unknown[0].body)
    assert f"unknown key id {kid}" in reasons["unknown:0"] and "'acme'" in reasons["unknown:0"]
    assert "fails authentication" in reasons["tampered:0"]
    assert "not a JSON object" in reasons["array:0"]
    for d in dead.values():  # kept sealed in the dead-letter queue: no plain text there
        assert secret.encode() not in d.body and b"[1, 2]" not in d.body
        assert d.headers[ENCRYPTION_HEADER] == "tink-aead-v1"
    key_values = [k["keyData"]["value"] for p in ("files", "messages")
                  for k in read_keyset_doc(keyset)[p]["key"]]
    assert not any(v in json.dumps(reasons) for v in key_values)


def test_encrypted_messages_on_the_embedded_queue(make_stream_env, tmp_path):
    env, keyset = _env(make_stream_env)
    _check_bad_cases(env, keyset, tmp_path)


@pytest.mark.rabbitmq
def test_encrypted_messages_on_rabbitmq(make_stream_env, tmp_path, rabbitmq_url):
    env, keyset = _env(make_stream_env, broker={"kind": "rabbitmq", "url": rabbitmq_url})
    _check_bad_cases(env, keyset, tmp_path)


@pytest.mark.nats
def test_encrypted_messages_on_nats(make_stream_env, tmp_path, own_nats):
    env, keyset = _env(make_stream_env, broker={"kind": "nats", "url": own_nats.url,
                                                "lease_secs": 2})
    _check_bad_cases(env, keyset, tmp_path)


def test_encrypted_message_for_a_tenant_without_keyset(make_stream_env, tmp_path):
    env = make_stream_env()
    path = tmp_path / "k.json"
    save_keyset(new_keyset(), path)
    _publish(env, _sealed(path, _rows(2), "x") + make_messages(_rows(3, 10), id_prefix="p"))
    env.drain()
    assert env.count() == 3
    reasons = {d.id: d.headers["x-reason"] for d in env.dead_letters()}
    assert set(reasons) == {"x:0", "x:1"}
    assert "no keyset registered" in reasons["x:0"]


def test_publish_jsonl_encrypts_and_required_refuses_plain(make_stream_env, tmp_path):
    tenant = stream_tenant() | {"encryption": {"keyset": "keys/acme.json", "required": True}}
    env = make_stream_env([tenant])
    keyset = env.config.home / "keys" / "acme.json"
    save_keyset(new_keyset(), keyset)
    src = tmp_path / "events.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _rows(20)))
    assert publish_jsonl(env.platform, "acme", src, id_field="id",
                         keyset=load_keyset(keyset, "acme")) == 20
    _publish(env, make_messages(_rows(1, 500), id_prefix="plain"))
    env.drain()
    assert env.count() == 20
    [dead] = env.dead_letters()
    assert dead.id == "plain:0" and "requires" in dead.headers["x-reason"]
