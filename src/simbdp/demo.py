"""``simbdp demo``: two tenants of different shapes, good and bad files, then the report."""

from __future__ import annotations

import asyncio
import gzip
import random
import shutil
import signal
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from rich.table import Table

from simbdp.api.app import serve_api
from simbdp.apps.sandbox import sandbox_problem
from simbdp.batch import BatchIngestManager
from simbdp.cli.common import console
from simbdp.cli.report import print_report
from simbdp.coredms.base import open_sink
from simbdp.coredms.compaction import compact_lake
from simbdp.crypto.files import encrypt_file
from simbdp.crypto.keyset import load_keyset, new_keyset, save_keyset
from simbdp.datagen import reddit_comments, sensor_readings
from simbdp.observe.logs import configure_logging
from simbdp.profiles import Platform, load_platform
from simbdp.state import StateStore
from simbdp.state.keys import OPERATOR, create_key
from simbdp.testing import free_port

__all__ = ["make_demo_home", "run_demo"]


def make_demo_home(home: Path, api_port: int = 8470) -> None:
    """Write the platform config, the two tenant profiles and the Reddit tenant's app."""
    assets = resources.files("simbdp") / "demo_assets"
    (home / "tenants").mkdir(parents=True, exist_ok=True)
    config: dict[str, object] = {"workers": 2, "stable_secs": 0.2, "rescan_secs": 0.5,
                                 "report_interval_secs": 1.0,
                                 "api": {"host": "127.0.0.1", "port": api_port},
                                 "sinks": {"lake": {"kind": "delta", "path": str(home / "lake"),
                                                    "compact_min_files": 0}}}
    problem = sandbox_problem()
    if problem is not None:  # the demo's own app, on a machine without bubblewrap: say so
        console.print(f"[red]tenant apps cannot be confined here ({problem}); the demo runs "
                      "them unconfined (apps.unconfined: true)[/red]")
        config["apps"] = {"unconfined": True}
    (home / "platform.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    for t in ("reddit", "sensors", "shop"):
        (home / "tenants" / f"{t}.yaml").write_text(
            (assets / f"{t}.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    save_keyset(new_keyset(), home / "keys" / "shop.json")  # the shop sends one file encrypted
    app_dir = home / "apps" / "reddit"
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "wrangle.py").write_text(
        (assets / "reddit" / "wrangle.py").read_text(encoding="utf-8"), encoding="utf-8")


def _drop(path: Path, data: bytes) -> None:
    """Write like a well-behaved client: to a .part name, then rename."""
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    part.replace(path)


def _csv_bytes(table: pa.Table) -> bytes:
    import pyarrow.csv as pacsv

    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    return sink.getvalue().to_pybytes()


def _drop_files(home: Path) -> int:
    reddit = home / "data" / "reddit" / "staging"
    sensors = home / "data" / "sensors" / "staging"
    n = 0
    for i in range(4):
        _drop(reddit / f"comments-{i}.csv", _csv_bytes(reddit_comments(50_000, seed=i,
                                                                       start_id=i * 50_000)))
        n += 1
    _drop(reddit / "comments-4.csv.gz",
          gzip.compress(_csv_bytes(reddit_comments(20_000, seed=9, start_id=200_000))))
    good = _csv_bytes(reddit_comments(1000, seed=3, start_id=300_000))
    _drop(reddit / "comments-again.csv", _csv_bytes(reddit_comments(50_000, seed=0)))  # dup
    _drop(reddit / "broken.csv", good + b"1,2,three-fields-only\n")  # wrong field count
    _drop(reddit / "truncated.csv.gz", gzip.compress(good)[:-200])  # cut short
    _drop(reddit / "notes.xml", b"<xml/>")  # file type not allowed
    _drop(reddit / "empty.csv", b"")
    for i in range(3):
        buf = pa.BufferOutputStream()
        pq.write_table(sensor_readings(20_000, seed=i), buf)
        _drop(sensors / f"readings-{i}.parquet", buf.getvalue().to_pybytes())
    bad = sensor_readings(2000, seed=7).to_pylist()
    bad[10]["temperature"] = 99.5  # fails the plausibility rule
    bad[20]["ts"] = "not a time"  # fails the cast
    lines = "\n".join(__import__("json").dumps(r) for r in bad).encode()
    _drop(sensors / "readings-3.jsonl", lines)
    _drop(sensors / "big.jsonl", b'{"station": "x"}\n' * 400_000)  # over the 5 MB limit
    return n + 13 + _drop_shop_files(home)


def _orders(n: int, seed: int) -> pa.Table:
    """``n`` shop orders; a few with a negative amount or an unknown country (rule failures)."""
    rng = random.Random(seed)
    countries = ["DE", "FI", "FR", "IT", "NL", "SE"]
    rows = [{"order_id": f"o{seed}-{i}", "country": rng.choice(countries),
             "amount": round(rng.uniform(1, 500), 2),
             "placed_at": f"2026-11-{rng.randint(1, 25):02}T{rng.randint(0, 23):02}:00:00"}
            for i in range(n)]
    for i in range(0, n, 500):
        rows[i]["amount"] = -rows[i]["amount"]
    rows[n // 2]["country"] = "XX"
    return pa.Table.from_pylist(rows)


def _drop_shop_files(home: Path) -> int:
    """Orders into a Delta lake table: plain files, one encrypted (as ``simbdp encrypt`` makes
    them) and one encrypted file damaged on the way (rejected: it does not decrypt)."""
    shop = home / "data" / "shop" / "staging"
    keyset = load_keyset(home / "keys" / "shop.json", "shop")
    for i in range(3):
        _drop(shop / f"orders-{i}.csv", _csv_bytes(_orders(5000, seed=i)))
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "orders-3.csv"
        plain.write_bytes(_csv_bytes(_orders(5000, seed=3)))
        encrypt_file(keyset, plain, Path(tmp) / "orders-3.csv.enc")
        sealed = (Path(tmp) / "orders-3.csv.enc").read_bytes()
    _drop(shop / "orders-3.csv.enc", sealed)
    damaged = bytearray(sealed)
    damaged[len(damaged) // 2] ^= 1
    _drop(shop / "orders-4.csv.enc", bytes(damaged))
    return 5



def run_demo(keep: Path | None = None, keep_serving: bool = False) -> None:
    """Run the demo; the API (and so ``/dashboard``) is served from start to end, and after
    the end until Ctrl-C when ``keep_serving``."""
    started = time.monotonic()
    home = keep.resolve() if keep else Path(tempfile.mkdtemp(prefix="simbdp-demo-"))
    api_stop = threading.Event()
    api: threading.Thread | None = None
    try:
        port = free_port()
        make_demo_home(home, port)
        platform = load_platform(home)
        configure_logging(home / "logs" / "simbdp.jsonl")
        store = StateStore.open(platform.config)
        manager = BatchIngestManager(platform, store)
        console.rule("simbdp demo")
        console.print(f"platform home: {home}")
        api = threading.Thread(target=serve_api, args=(platform, api_stop), daemon=True,
                               name="simbdp-demo-api")
        api.start()
        url = f"http://127.0.0.1:{port}/dashboard"
        # a key of the demo's own, printed on the terminal only (never logged)
        operator_key = create_key(store, OPERATOR)
        console.print(f"live dashboard: {url} (sign in with the operator key "
                      f"{operator_key})", soft_wrap=True)
        console.print("tenants: reddit (CSV + app 'clean', keyed table), "
                      "sensors (Parquet + JSON lines, quality rules), "
                      "shop (CSV, one file encrypted, into a Delta Lake table)")
        count = _drop_files(home)
        console.print(f"dropped {count} files (some bad) into the staging folders; ingesting ...")
        stop = threading.Event()
        manager.serve(stop, idle_exit=True)
        console.print(f"batch done in {time.monotonic() - started:.1f} s; now streaming ...")
        _stream_part(platform, store)
        print_report(store)
        _print_outcomes(store)
        _print_rows(platform)
        _print_lake(platform)
        console.print(f"demo finished in {time.monotonic() - started:.1f} s; logs: "
                      f"{home / 'logs' / 'simbdp.jsonl'}")
        console.print(f"dashboard served during the run: {url} (operator key {operator_key}; "
                      "`simbdp top --home " + str(home) + "` shows the same in a terminal)",
                      soft_wrap=True)
        if keep_serving:
            console.print("still serving the dashboard; Ctrl-C (or SIGTERM) stops")
            _wait_for_stop()
    finally:
        api_stop.set()
        if api is not None:
            api.join(10)
        if keep is None:
            shutil.rmtree(home, ignore_errors=True)


def _wait_for_stop() -> None:
    done = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stream_part(platform: Platform, store: StateStore) -> None:
    """Both tenants publish on the embedded queue; a burst from the Reddit tenant makes the
    monitor scale its app up, and back down once the backlog is gone."""
    from simbdp.stream.client import make_messages, publish
    from simbdp.stream.manager import StreamManager
    from simbdp.stream.monitor import StreamMonitor

    stop = threading.Event()
    threads = [threading.Thread(target=part.run, args=(stop,), daemon=True) for part in (
        StreamManager(platform, StateStore.open(platform.config), grace_secs=10),
        StreamMonitor(platform, StateStore.open(platform.config)))]
    for t in threads:
        t.start()
    store.set_desired("reddit", "live", 1)
    store.set_desired("sensors", "feed", 1)
    burst = reddit_comments(60_000, seed=42, start_id=1_000_000).to_pylist()
    readings = sensor_readings(3000, seed=11).to_pylist()
    asyncio.run(publish(platform, "sensors", make_messages(readings, id_prefix="s")))
    asyncio.run(publish(platform, "reddit", make_messages(burst, id_field="id")))
    console.print(f"published a burst of {len(burst):,} Reddit comments and "
                  f"{len(readings):,} sensor readings")
    deadline = time.monotonic() + 40
    seen: set[str] = set()
    while time.monotonic() < deadline:
        for d in reversed(store.decisions()):
            key = f"{d['at']}{d['action']}"
            if key not in seen and d["action"] in ("scale_up", "scale_down"):
                seen.add(key)
                console.print(f"  monitor: {d['tenant']}/{d['app']} {d['action']} "
                              f"{d['instances_before']} -> {d['instances_after']}: {d['reason']}")
        actions = {d["action"] for d in store.decisions("reddit")}
        if {"scale_up", "scale_down"} <= actions:
            break
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(30)


def _print_outcomes(store: StateStore) -> None:
    t = Table(title="every file and what happened to it")
    for col in ("tenant", "file", "outcome", "rows", "rejected rows"):
        t.add_column(col, no_wrap=True)
    t.add_column("reason", max_width=80)
    for r in sorted(store.records(kind="batch"), key=lambda r: (r["tenant"], r["source"])):
        t.add_row(r["tenant"], r["source"], r["outcome"], f"{r['rows_loaded']:,}",
                  str(r["rows_rejected"]), (r["reason"] or "")[:90])
    console.print(t)


def _print_lake(platform: Platform) -> None:
    """The shop's Delta table: a data file per ingested file, then compacted to one."""
    t = Table(title="lake: Delta tables, compacted (simbdp lake compact)")
    for col in ("tenant", "table", "files before", "files after", "rows"):
        t.add_column(col)
    sink = open_sink(platform.config.sinks["lake"])
    try:
        for c in compact_lake(platform):
            # the ledger (a row per committed file) is no profile table: counted as a table
            rows = sink.open_table(platform.tenant(c.tenant),  # type: ignore[attr-defined]
                                   c.table).to_pyarrow_dataset().count_rows()
            t.add_row(c.tenant, c.table, str(c.files_before), str(c.files_after), f"{rows:,}")
    finally:
        sink.close()
    console.print(t)


def _print_rows(platform: Platform) -> None:
    for tenant, table, sink_name in (("reddit", "comments", "default"),
                                     ("sensors", "readings", "default"),
                                     ("shop", "orders", "lake")):
        profile = platform.tenant(tenant)
        sink = open_sink(platform.config.sinks[sink_name])
        try:
            rows = sink.read_rows(profile, table, limit=3)
            total = sink.count_rows(profile, table)
        finally:
            sink.close()
        t = Table(title=f"{tenant}.{table}: {total:,} rows; the first 3")
        for col in rows.column_names:
            t.add_column(col)
        for row in rows.to_pylist():
            t.add_row(*(str(v)[:40] for v in row.values()))
        console.print(t)
