"""The API served for real (uvicorn, TLS with a certificate made here), the push client, and
uploads that stall or lie about their length."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

import pytest
import trustme

from simbdp.api.app import serve_api
from simbdp.batch import BatchIngestManager
from simbdp.datagen import reddit_comments
from simbdp.push import push
from simbdp.testing import free_port, wait_port


@pytest.fixture
def live(make_api, tmp_path):  # type: ignore[no-untyped-def]
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(key_file)
    cert.cert_chain_pems[0].write_to_path(cert_file)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(ca_file)
    port = free_port()
    api = make_api(api={"port": port, "tls_cert": str(cert_file), "tls_key": str(key_file),
                        "upload_stall_secs": 1.0}, stable_secs=0.1, rescan_secs=0.2)
    stop = threading.Event()
    threads = [threading.Thread(target=serve_api, args=(api.platform, stop), daemon=True),
               threading.Thread(target=BatchIngestManager(api.platform, api.store).serve,
                                args=(stop,), daemon=True)]
    for t in threads:
        t.start()
    wait_port(port, 20)
    yield api, f"https://127.0.0.1:{port}", str(ca_file), port
    stop.set()
    for t in threads:
        t.join(30)


def _csv(n: int, seed: int) -> bytes:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    sink = pa.BufferOutputStream()
    pacsv.write_csv(reddit_comments(n, seed=seed, start_id=seed * n), sink)
    return sink.getvalue().to_pybytes()


def test_push_over_tls_uploads_allowed_files_and_resumes(live, tmp_path):
    api, url, ca, _ = live
    folder = tmp_path / "outbox"
    folder.mkdir()
    (folder / "a.csv").write_bytes(_csv(200, 1))
    (folder / "b.csv").write_bytes(_csv(300, 2))
    (folder / "notes.xml").write_bytes(b"<x/>")
    (folder / "huge.csv").write_bytes(b"x" * 200_000)
    (folder / ".hidden.csv").write_bytes(_csv(10, 3))
    results = {r.file: r for r in push(url, api.keys["acme"], "acme", folder, verify=ca,
                                       progress=False)}
    assert results["a.csv"].status == results["b.csv"].status == "sent"
    assert results["notes.xml"].status == "skipped" and "type" in results["notes.xml"].reason
    assert results["huge.csv"].status == "skipped" and "limit" in results["huge.csv"].reason
    hidden = results[".hidden.csv"]
    assert hidden.status == "skipped" and "starts with a dot" in hidden.reason
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(api.store.records("acme", outcome="processed")) < 2:
        time.sleep(0.2)
    assert len(api.store.records("acme", outcome="processed")) == 2
    again = {r.file: r.status for r in push(url, api.keys["acme"], "acme", folder, verify=ca,
                                            progress=False)}
    assert again["a.csv"] == again["b.csv"] == "already_ingested"


def test_tls_refuses_an_unknown_certificate(live):
    import httpx

    _, url, _, _ = live
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", verify=True)


def _raw(port: int, ca: str, request: bytes, wait: float) -> bytes:
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(request)
        s.settimeout(wait)
        out = b""
        try:
            while b"\r\n\r\n" not in out or not out.rstrip().endswith(b"}"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (TimeoutError, ssl.SSLError, ConnectionError):
            pass
        return out


def test_stalled_upload_times_out_and_leaves_nothing(live):
    api, _, ca, port = live
    head = (f"PUT /v1/tenants/acme/files/slow.csv HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {api.keys['acme']}\r\nContent-Length: 5000\r\n\r\n")
    reply = _raw(port, ca, head.encode() + b"id,subreddit\n1,a\n", wait=10)
    assert b" 408 " in reply.split(b"\r\n")[0] and b"stalled" in reply
    assert api.staged() == []


def test_declared_length_shorter_than_body(live):
    api, _, ca, port = live
    body = b"id,subreddit\n1,a\n2,b\n"
    head = (f"PUT /v1/tenants/acme/files/lie.csv HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {api.keys['acme']}\r\nContent-Length: 5\r\n\r\n")
    reply = _raw(port, ca, head.encode() + body, wait=10)
    # the server reads exactly 5 bytes: the file is that long, the rest is a bad request
    status = reply.split(b"\r\n")[0]
    assert b" 202 " in status or b" 400 " in status
    staged = api.staged()
    assert staged in ([], ["lie.csv"])
    if staged:
        assert (api.platform.config.staging_dir("acme") / "lie.csv").stat().st_size == 5


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_client_gone_mid_upload_leaves_nothing_and_one_log_line(live, capfd):
    api, _, ca, port = live
    uvicorn_errors = _Records()
    logging.getLogger("uvicorn.error").addHandler(uvicorn_errors)
    head = (f"PUT /v1/tenants/acme/files/gone.csv HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {api.keys['acme']}\r\nContent-Length: 50000\r\n\r\n")
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(head.encode() + b"id,subreddit\n" + b"1,a\n" * 2000)
        time.sleep(0.3)
    seen = ""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "upload_disconnected" not in seen:
        time.sleep(0.1)
        seen += "".join(capfd.readouterr())
    time.sleep(1.0)
    seen += "".join(capfd.readouterr())
    logging.getLogger("uvicorn.error").removeHandler(uvicorn_errors)
    assert uvicorn_errors.messages == []
    assert seen.count("upload_disconnected") == 1, seen
    assert "gone.csv" in seen
    assert [p.name for p in api.platform.config.staging_dir("acme").iterdir()] == []
