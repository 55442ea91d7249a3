"""API benchmark: a 1 GB upload over loopback beside copying the file into the staging
folder on the same disk, and requests/s of the records endpoint with 100,000 records.

    python -m benchmarks.bench_api [--gb 1] [--records 100000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from simbdp.api.app import serve_api
from simbdp.state import StateStore
from simbdp.state.keys import create_key
from simbdp.testing import make_platform, tenant_profile


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _big_file(path: Path, gb: float) -> None:
    block = os.urandom(1024 * 1024)
    with path.open("wb") as f:
        for _ in range(int(gb * 1024)):
            f.write(block)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    data = Path(__file__).parent / "data"
    data.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data) as tmp:
        port = _port()
        profile = tenant_profile("acme", batch={"max_file_bytes": "8GB",
                                                "file_types": ["csv"]})
        platform = make_platform(Path(tmp) / "home", [profile],
                                 api={"port": port, "requests_per_minute": 10_000_000,
                                      "upload_bytes_per_minute": "1TB"})
        store = StateStore.open(platform.config)
        key = create_key(store, "acme")
        stop = threading.Event()
        threading.Thread(target=serve_api, args=(platform, stop), daemon=True).start()
        time.sleep(1.5)
        src = Path(tmp) / "big.csv"
        _big_file(src, args.gb)
        size = src.stat().st_size
        staging = platform.config.staging_dir("acme")
        staging.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        shutil.copyfile(src, staging / "copy.csv")
        os.sync()
        cp = time.perf_counter() - t0
        (staging / "copy.csv").unlink()
        with src.open("rb") as f:
            sha = hashlib.file_digest(f, "sha256").hexdigest()
        headers = {"Authorization": f"Bearer {key}", "X-Content-SHA256": sha}
        t0 = time.perf_counter()
        with src.open("rb") as f:
            r = httpx.put(f"http://127.0.0.1:{port}/v1/tenants/acme/files/up.csv", content=f,
                          headers={**headers, "Content-Length": str(size)}, timeout=600)
        os.sync()
        up = time.perf_counter() - t0
        r.raise_for_status()
        mb = size / 1e6
        print("# API benchmark\n\n| what | seconds | MB/s | vs copy |")
        print("| --- | ---: | ---: | ---: |")
        print(f"| copy into the staging folder (bare) | {cp:.2f} | {mb / cp:,.0f} | - |")
        print(f"| upload over loopback (PUT, sha256 verified) | {up:.2f} | {mb / up:,.0f} | "
              f"{cp / up:.0%} |")

        rows = [(uuid.uuid4().hex, "acme", "batch", f"f{i}.csv", time.time() - i, "processed")
                for i in range(args.records)]
        store.db.executemany("INSERT INTO ingestions (id, tenant, kind, source, started_at, "
                             "outcome) VALUES (?, ?, ?, ?, ?, ?)", rows)
        url = f"http://127.0.0.1:{port}/v1/tenants/acme/records?limit=100&outcome=processed"

        async def load() -> tuple[int, float]:
            done = 0
            deadline = time.perf_counter() + args.seconds
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as c:
                async def worker() -> None:
                    nonlocal done
                    while time.perf_counter() < deadline:
                        (await c.get(url)).raise_for_status()
                        done += 1
                await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            return done, args.seconds

        n, secs = asyncio.run(load())
        print(f"\nrecords endpoint, {args.records:,} records, 100 per page, "
              f"{args.concurrency} concurrent clients: {n / secs:,.0f} requests/s")
        stop.set()


if __name__ == "__main__":
    main()
