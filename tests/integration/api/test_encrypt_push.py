"""``simbdp push --encrypt`` against the API served for real: files leave the tenant encrypted,
load once, and a resumed push sends the same ciphertext (the ledger knows it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from simbdp.api.app import serve_api
from simbdp.batch import BatchIngestManager
from simbdp.coredms.base import open_sink
from simbdp.crypto.keyset import new_keyset, save_keyset
from simbdp.datagen import reddit_comments
from simbdp.push import ENCRYPTED_COPIES, push
from simbdp.state import StateStore
from simbdp.state.keys import create_key
from simbdp.testing import free_port, make_platform, tenant_profile, wait_port


def _csv(n: int, seed: int) -> bytes:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(reddit_comments(n, seed=seed, start_id=seed * n), sink)
    return sink.getvalue().to_pybytes()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    home = tmp_path / "home"
    save_keyset(new_keyset(), home / "keys" / "acme.json")
    port = free_port()
    platform = make_platform(home, [tenant_profile(
        "acme", encryption={"keyset": "keys/acme.json", "required": True})],
        api={"port": port}, stable_secs=0.1, rescan_secs=0.2)
    store = StateStore.open(platform.config)
    stop = threading.Event()
    threads = [threading.Thread(target=serve_api, args=(platform, stop), daemon=True),
               threading.Thread(target=BatchIngestManager(platform, store).serve,
                                args=(stop,), daemon=True)]
    for t in threads:
        t.start()
    wait_port(port, 20)
    yield {"url": f"http://127.0.0.1:{port}", "key": create_key(store, "acme"),
           "store": store, "platform": platform, "keyset": home / "keys" / "acme.json"}
    stop.set()
    for t in threads:
        t.join(30)


def _wait_processed(store: StateStore, n: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(store.records("acme", outcome="processed")) < n:
        time.sleep(0.2)


def test_push_encrypt_sends_enc_files_once(served, tmp_path):
    folder = tmp_path / "outbox"
    folder.mkdir()
    (folder / "a.csv").write_bytes(_csv(200, 1))
    (folder / "b.csv").write_bytes(_csv(300, 2))
    # the tenant's own copy of its keyset (the platform's lives in its home)
    tenant_keys = tmp_path / "my-keys.json"
    tenant_keys.write_bytes(served["keyset"].read_bytes())
    results = {r.file: r.status for r in push(served["url"], served["key"], "acme", folder,
                                              progress=False, encrypt=tenant_keys)}
    assert results == {"a.csv.enc": "sent", "b.csv.enc": "sent"}
    store = served["store"]
    _wait_processed(store, 2)
    recs = store.records("acme", outcome="processed")
    assert sorted(r["source"] for r in recs) == ["a.csv.enc", "b.csv.enc"]
    sink = open_sink(served["platform"].config.sinks["default"])
    try:
        assert sink.count_rows(served["platform"].tenant("acme"), "comments") == 500
    finally:
        sink.close()
    assert len(list((folder / ENCRYPTED_COPIES).iterdir())) == 2
    again = {r.file: r.status for r in push(served["url"], served["key"], "acme", folder,
                                            progress=False, encrypt=tenant_keys)}
    assert again == {"a.csv.enc": "already_ingested", "b.csv.enc": "already_ingested"}


def test_plain_push_is_refused_when_encryption_is_required(served, tmp_path):
    folder = tmp_path / "outbox"
    folder.mkdir()
    (folder / "a.csv").write_bytes(_csv(10, 1))
    [res] = push(served["url"], served["key"], "acme", folder, progress=False)
    assert res.status == "sent"  # the server takes it, the worker rejects it
    store = served["store"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not store.records("acme", outcome="rejected"):
        time.sleep(0.2)
    [rec] = store.records("acme", outcome="rejected")
    assert "not encrypted" in rec["reason"]
