"""The encryption commands: ``simbdp keyset new|rotate|retire|show``, ``simbdp encrypt``,
``simbdp ingest`` of the result and ``simbdp publish --encrypt``."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from typer.testing import CliRunner

from simbdp.cli.main import app
from simbdp.coredms.base import open_sink
from simbdp.crypto.keyset import read_keyset_doc
from simbdp.datagen import write_reddit_csv
from simbdp.testing import make_platform, stream_tenant, tenant_profile

runner = CliRunner()


def _ok(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def test_keyset_lifecycle_and_no_key_printed(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    out = _ok("keyset", "new", str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = read_keyset_doc(path)
    first = doc["files"]["primaryKeyId"]
    assert f"primary key id {first}" in out
    out = _ok("keyset", "rotate", str(path))
    doc = read_keyset_doc(path)
    assert len(doc["files"]["key"]) == len(doc["messages"]["key"]) == 2
    assert f"also accepted: {first}" in out
    _ok("keyset", "rotate", str(path))  # a second rotation drops the first key
    assert first not in [k["keyId"] for k in read_keyset_doc(path)["files"]["key"]]
    out = _ok("keyset", "retire", str(path))
    doc = read_keyset_doc(path)
    assert len(doc["files"]["key"]) == 1 and "also accepted" not in out
    secrets = [k["keyData"]["value"] for p in ("files", "messages") for k in doc[p]["key"]]
    out += _ok("keyset", "show", str(path))
    assert not any(s in out for s in secrets)
    res = runner.invoke(app, ["keyset", "new", str(path)])
    assert res.exit_code == 2 and "exists" in res.output


def test_encrypt_then_ingest(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_platform(home, [tenant_profile("acme", encryption={"keyset": "keys/acme.json"})])
    _ok("keyset", "new", str(home / "keys" / "acme.json"))
    plain = tmp_path / "comments.csv"
    write_reddit_csv(plain, 1234)
    _ok("encrypt", "--key", str(home / "keys" / "acme.json"), str(plain))
    enc = tmp_path / "comments.csv.enc"
    assert enc.exists() and b"subreddit" not in enc.read_bytes()
    out = _ok("ingest", "--tenant", "acme", "--home", str(home), str(enc))
    assert "processed" in out
    platform = make_platform(home, [tenant_profile("acme", encryption={
        "keyset": "keys/acme.json"})])
    sink = open_sink(platform.config.sinks["default"])
    try:
        assert sink.count_rows(platform.tenant("acme"), "comments") == 1234
    finally:
        sink.close()


def test_publish_encrypt_needs_a_keyset(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_platform(home, [stream_tenant()])
    src = tmp_path / "e.jsonl"
    src.write_text(json.dumps({"id": "1", "n": 1, "note": "x"}) + "\n")
    res = runner.invoke(app, ["publish", str(src), "--tenant", "acme", "--encrypt",
                              "--home", str(home)])
    assert res.exit_code == 2 and "no keyset registered" in res.output
