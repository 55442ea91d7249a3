"""Encrypted files (``*.enc``) through the real batch path into DuckDB: decrypted while read,
and every bad case rejected with a reason naming tenant and file, the file kept in rejected/,
no key material anywhere."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest

from simbdp.crypto.files import encrypt_file
from simbdp.crypto.keyset import (
    load_keyset,
    new_keyset,
    read_keyset_doc,
    retire_keyset,
    rotate_keyset,
    save_keyset,
)
from simbdp.datagen import write_reddit_csv
from simbdp.testing import tenant_profile


def _profile(keyset: str | None = "keys/acme.json", **kw: Any) -> dict[str, Any]:
    enc = {"encryption": {"keyset": keyset, **kw}} if keyset else {}
    return tenant_profile("acme", **enc)


def _keyset(home: Path, name: str = "keys/acme.json") -> Path:
    path = home / name
    save_keyset(new_keyset(), path)
    return path


def _enc(env, plain: bytes, name: str, keyset: Path) -> Path:  # type: ignore[no-untyped-def]
    """Encrypt ``plain`` into the staging folder as ``name`` (the tenant's side)."""
    src = env.config.home / "tenant-side" / name.removesuffix(".enc")
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(plain)
    dest = env.staging("acme") / name
    encrypt_file(load_keyset(keyset, "acme"), src, dest)
    return dest


def _reason(env, outcome: str, name: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    path = env.config.outcome_dir("acme", outcome) / f"{name}.reason.json"
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def _code(env, name: str) -> str:  # type: ignore[no-untyped-def]
    return str(_reason(env, "rejected", name)["code"])


def _secrets(keyset: Path) -> list[str]:
    doc = read_keyset_doc(keyset)
    return [k["keyData"]["value"] for p in ("files", "messages") for k in doc[p]["key"]]


def _assert_no_key_material(env, keyset: Path, output: str = "") -> None:  # type: ignore[no-untyped-def]
    """No key of ``keyset`` in the records, the platform's files (but the keyset's own) or
    the captured logs."""
    secrets = _secrets(keyset)
    records = env.store.records("acme")
    assert records
    text = json.dumps(records, default=str) + output
    assert not any(s in text for s in secrets)
    for p in env.config.home.rglob("*"):
        if p.is_file() and p.resolve() != keyset.resolve():
            data = p.read_bytes()
            assert not any(s.encode() in data for s in secrets), p


@pytest.mark.parametrize("name", ["comments.csv.enc", "comments.csv.gz.enc"])
def test_encrypted_csv_loads(make_env, comments, tmp_path, name):
    env = make_env([_profile()])
    keyset = _keyset(env.config.home)
    plain = comments(3000)
    _enc(env, gzip.compress(plain) if ".gz" in name else plain, name, keyset)
    [rec] = env.ingest("acme", name)
    assert rec["outcome"] == "processed", rec["reason"]
    assert rec["rows_loaded"] == 3000 and env.count("acme") == 3000
    assert name in env.outcome_files("acme", "processed")
    # the worker counted the plain bytes, not the ciphertext's
    assert rec["decompressed_bytes"] == len(plain)
    _assert_no_key_material(env, keyset)


def test_encrypted_jsonl_loads(make_env, tmp_path):
    env = make_env([_profile()])
    keyset = _keyset(env.config.home)
    rows = [{"id": str(i), "subreddit": "r", "author": "a", "body": f"hello {i}",
             "score": i, "ups": 1, "created_utc": 1_700_000_000 + i} for i in range(500)]
    plain = "".join(json.dumps(r) + "\n" for r in rows).encode()
    _enc(env, plain, "comments.jsonl.enc", keyset)
    [rec] = env.ingest("acme", "comments.jsonl.enc")
    assert rec["outcome"] == "processed", rec["reason"]
    assert rec["rows_rejected"] == 0 and env.count("acme") == 500


def test_encrypted_json_array_is_refused_with_a_reason(make_env):
    env = make_env([_profile()])
    keyset = _keyset(env.config.home)
    _enc(env, b'[{"id": "1", "subreddit": "r"}]', "comments.json.enc", keyset)
    [rec] = env.ingest("acme", "comments.json.enc")
    assert rec["outcome"] == "rejected" and "JSON lines" in rec["reason"]


def test_limits_count_decrypted_bytes(make_env, comments):
    plain = comments(3000)
    gz = gzip.compress(plain)
    limit = (len(gz) + len(plain)) // 2  # the file passes it only once decompressed
    env = make_env([_profile() | {"batch": {**tenant_profile("acme")["batch"],
                                            "max_file_bytes": limit}}])
    keyset = _keyset(env.config.home)
    _enc(env, gz, "comments.csv.gz.enc", keyset)
    [rec] = env.ingest("acme", "comments.csv.gz.enc")
    assert rec["outcome"] == "rejected" and _code(env, "comments.csv.gz.enc") == "file_too_big"
    assert "decompressed" in rec["reason"] and env.count("acme") == 0


def test_rotation_keeps_the_old_key_until_it_is_retired(make_env, comments):
    env = make_env([_profile()])
    keyset = _keyset(env.config.home)
    old = env.config.home / "old-key.json"
    save_keyset(read_keyset_doc(keyset), old)
    save_keyset(rotate_keyset(read_keyset_doc(keyset)), keyset, overwrite=True)
    _enc(env, comments(100), "comments-old.csv.enc", old)
    _enc(env, comments(100, seed=1, start_id=100), "comments-new.csv.enc", keyset)
    recs = env.ingest("acme", "comments-old.csv.enc", "comments-new.csv.enc")
    assert [r["outcome"] for r in recs] == ["processed", "processed"], recs
    # the rotation ends: the old key is dropped, its files are refused
    save_keyset(retire_keyset(read_keyset_doc(keyset)), keyset, overwrite=True)
    _enc(env, comments(100, seed=2, start_id=200), "comments-late.csv.enc", old)
    [rec] = env.ingest("acme", "comments-late.csv.enc")
    assert rec["outcome"] == "rejected" and _code(env, "comments-late.csv.enc") == "wrong_key"
    assert env.count("acme") == 200


def test_wrong_key(make_env, comments, capfd):
    env = make_env([_profile()])
    keyset = _keyset(env.config.home)
    other = _keyset(env.config.home, "elsewhere/other.json")
    _enc(env, comments(100), "comments.csv.enc", other)
    [rec] = env.ingest("acme", "comments.csv.enc")
    assert rec["outcome"] == "rejected" and _code(env, "comments.csv.enc") == "wrong_key"
    assert "'acme'" in rec["reason"] and "comments.csv.enc" in rec["reason"]
    assert "comments.csv.enc" in env.outcome_files("acme", "rejected")
    out = "".join(capfd.readouterr())
    _assert_no_key_material(env, keyset, out)
    _assert_no_key_material(env, other, out)


@pytest.mark.parametrize("damage", ["truncated", "tampered", "segment_dropped"])
def test_damaged_file_is_rejected_and_nothing_loads(make_env, comments, damage):
    env = make_env([_profile()])
    keyset = _keyset(env.config.home)
    path = _enc(env, comments(40_000), "comments.csv.enc", keyset)  # several 1 MiB segments
    data = path.read_bytes()
    assert len(data) > 3 * 1024**2
    if damage == "truncated":
        data = data[: len(data) - 100]
    elif damage == "tampered":
        data = bytearray(data)
        data[len(data) // 2] ^= 0x01
        data = bytes(data)
    else:  # a whole segment cut out of the middle
        seg = 1024**2
        data = data[: 2 * seg] + data[3 * seg:]
    path.write_bytes(data)
    [rec] = env.ingest("acme", "comments.csv.enc")
    assert rec["outcome"] == "rejected", rec["reason"]
    assert _code(env, "comments.csv.enc") == "corrupt_encrypted", rec["reason"]
    assert "truncated or was altered" in rec["reason"] and "'acme'" in rec["reason"]
    assert "comments.csv.enc" in env.outcome_files("acme", "rejected")
    assert env.count("acme") == 0  # rolled back: the rows before the damage are not kept


def test_encrypted_file_without_a_registered_key(make_env, comments, tmp_path):
    env = make_env([_profile(keyset=None)])
    keyset = _keyset(tmp_path, "tenant-own.json")
    _enc(env, comments(100), "comments.csv.enc", keyset)
    [rec] = env.ingest("acme", "comments.csv.enc")
    assert rec["outcome"] == "rejected" and _code(env, "comments.csv.enc") == "no_key"
    assert "no keyset registered" in rec["reason"] and "comments.csv.enc" in rec["reason"]
    assert "comments.csv.enc" in env.outcome_files("acme", "rejected")


def test_required_encryption_refuses_plain_files(make_env, comments):
    env = make_env([_profile(required=True)])
    _keyset(env.config.home)
    (env.staging("acme") / "comments.csv").write_bytes(comments(10))
    [rec] = env.ingest("acme", "comments.csv")
    assert rec["outcome"] == "rejected" and _code(env, "comments.csv") == "not_encrypted"


def test_keyset_readable_by_others_is_refused(make_env, comments):
    env = make_env([_profile()])
    keyset = _keyset(env.config.home)
    _enc(env, comments(10), "comments.csv.enc", keyset)
    os.chmod(keyset, 0o644)
    [rec] = env.ingest("acme", "comments.csv.enc")
    assert rec["outcome"] == "rejected" and _code(env, "comments.csv.enc") == "keyset_unusable"
    assert "chmod 600" in rec["reason"] and "0644" in rec["reason"]


def test_keyset_in_the_tenants_folder_is_refused(make_env, comments):
    env = make_env([_profile(keyset="data/acme/keyset.json")])
    keyset = _keyset(env.config.home, "data/acme/keyset.json")
    _enc(env, comments(10), "comments.csv.enc", keyset)
    [rec] = env.ingest("acme", "comments.csv.enc")
    assert rec["outcome"] == "rejected" and _code(env, "comments.csv.enc") == "keyset_unusable"
    assert "outside" in rec["reason"]


@pytest.mark.slow
def test_large_encrypted_file_loads(make_env, tmp_path):
    """> 64 MiB of plain text, some 80 segments, through the worker into DuckDB."""
    env = make_env([_profile()])
    keyset = _keyset(env.config.home)
    src = write_reddit_csv(tmp_path / "comments.csv", 600_000)
    assert src.stat().st_size > 64 * 1024**2
    encrypt_file(load_keyset(keyset, "acme"), src, env.staging("acme") / "comments.csv.enc")
    [rec] = env.ingest("acme", "comments.csv.enc")
    assert rec["outcome"] == "processed", rec["reason"]
    assert rec["rows_loaded"] == 600_000 and env.count("acme") == 600_000
    assert rec["decompressed_bytes"] == src.stat().st_size
