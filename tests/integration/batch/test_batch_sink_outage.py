"""A PostgreSQL sink that goes away for a while: files wait, then load, exactly once.

The test runs its own PostgreSQL cluster (initdb under /tmp, on a free port) and stops it,
so the shared server other tests use is never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simbdp.testing import drop, free_port, missing, tenant_profile

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OUTAGE_SECS = 30.0


class Cluster:
    """A throw-away PostgreSQL cluster run by the postgres user."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="simbdp-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres(PG_BIN / "initdb", "-D", str(self.dir / "data"), "-A", "trust",
                          "-U", "postgres", "--no-sync")

    def _as_postgres(self, *cmd: object) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *map(str, cmd)], check=True,
                       capture_output=True, timeout=120)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.dir / "data", "-o", opts,
                          "-l", self.dir / "log", "-w", "start")

    def wait_for_copies(self, n: int, timeout: float = 20.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while time.monotonic() < deadline:
                row = conn.execute("SELECT count(*) FROM pg_stat_activity "
                                   "WHERE query ILIKE 'COPY%' AND state = 'active'").fetchone()
                if row is not None and row[0] >= n:
                    return
                time.sleep(0.02)
        raise AssertionError(f"{n} COPY statements never ran at once")

    def stop(self) -> None:
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.dir / "data", "-m", "fast", "-w",
                          "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._as_postgres(PG_BIN / "pg_ctl", "-D", self.dir / "data", "-m", "immediate",
                              "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def own_pg() -> Iterator[Cluster]:
    if os.geteuid() != 0 or not (PG_BIN / "initdb").exists():
        missing("needs root and PostgreSQL 15's initdb to run a cluster of its own")
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_outage_files_wait_then_load_exactly_once(make_env, comments, own_pg):
    table = {**tenant_profile("acme")["tables"][0], "sinks": ["pg"]}
    env = make_env([tenant_profile("acme", tables=[table])], stable_secs=0.0, workers=2,
                   sink_retry_max_secs=2.0,
                   sinks={"pg": {"kind": "postgres", "dsn": own_pg.dsn}})
    manager, staging = env.manager, env.staging("acme")
    sizes = {"a.csv": 200_000, "b.csv": 200_000, "c.csv": 500, "d.csv": 700}
    for i, name in enumerate(("a.csv", "b.csv")):
        drop(staging / name, comments(sizes[name], seed=i, start_id=i * 1_000_000))
    manager.submit("acme", [staging / "a.csv", staging / "b.csv"])
    manager.pump()
    own_pg.wait_for_copies(1)  # a worker is in the middle of its COPY
    own_pg.stop()
    stopped = time.monotonic()
    try:
        for i, name in enumerate(("c.csv", "d.csv"), start=2):  # dropped during the outage
            drop(staging / name, comments(sizes[name], seed=i, start_id=i * 1_000_000))
        manager.submit("acme", [staging / "c.csv", staging / "d.csv"])
        while time.monotonic() - stopped < OUTAGE_SECS:
            manager.pump()
            manager.wait(0.2)
        # a file may be in a retry at any instant: until all four are seen waiting at once
        deadline = time.monotonic() + 10
        while True:
            waiting = env.store.records("acme", outcome="waiting")
            if {r["source"] for r in waiting} == set(sizes) or time.monotonic() > deadline:
                break
            manager.pump()
            manager.wait(0.05)
        assert {r["source"] for r in waiting} == set(sizes), waiting
        assert all("PostgreSQL" in r["reason"] for r in waiting)
        assert env.outcome_files("acme", "failed") == []
    finally:
        own_pg.start()
    manager.run_until_idle(timeout_secs=120)
    records = env.store.records("acme")
    assert sorted(r["source"] for r in records) == sorted(sizes), records
    assert {r["outcome"] for r in records} == {"processed"}
    assert sum(r["rows_loaded"] for r in records) == sum(sizes.values())
    assert env.count("acme", sink="pg") == sum(sizes.values())
    assert sorted(env.outcome_files("acme", "processed")) == sorted(
        [*sizes, *(f"{n}.reason.json" for n in sizes)])
