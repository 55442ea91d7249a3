"""simbdp as users run it: ``simbdp serve`` as a subprocess with files dropped into its
staging folders, and the whole ``simbdp ingest`` command.

A :class:`Home` is a platform home in a temporary folder with the benchmark's tenants; a
:class:`Server` runs ``simbdp serve`` on it and is timed from the drop (a rename into the
staging folder, the files copied beside it before the clock starts) to the last record's
end in the state store, polled; its process tree's PSS is sampled meanwhile. Before any
timing, a first one-row file of a tenant of its own has gone through, so the watcher and
the warm workers are up (a user's server has been running).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import yaml

from benchmarks.common import Sampler, run_measured
from benchmarks.datasets import REDDIT_COLUMNS, profile_columns, reddit_table
from simbdp.testing import tenant_profile

__all__ = ["CLI", "Home", "Server", "ingest_cli"]

CLI = str(Path(sys.executable).with_name("simbdp"))
WARMUP = "warmup"  # every home's tenant of the first file


class Home:
    """A platform home: ``tenants`` maps tenant id -> (table name, columns, sink name)."""

    def __init__(self, root: Path, *, workers: int = 2, pg_dsn: str | None = None):
        self.root, self.path = root, root / "home"
        (self.path / "tenants").mkdir(parents=True)
        cfg: dict[str, Any] = {"workers": workers, "api": {"port": 0}}
        if pg_dsn:
            cfg["sinks"] = {"pg": {"kind": "postgres", "dsn": pg_dsn}}
        (self.path / "platform.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
        self.add_tenant(WARMUP, "comments", REDDIT_COLUMNS)

    def add_tenant(self, tenant: str, table: str, columns: list[tuple[str, str, str, bool]],
                   sink: str = "default", null_values: list[str] | None = None) -> None:
        spec = {"name": table, "columns": profile_columns(columns), "sinks": [sink]}
        prof = tenant_profile(tenant, table=spec, batch={
            "max_files_per_day": 1_000_000, "max_files_per_ingestion": 100_000,
            "max_bytes_per_day": "1TB"})
        if null_values:
            prof["csv"] = {"null_values": null_values}
        (self.path / "tenants" / f"{tenant}.yaml").write_text(yaml.safe_dump(prof),
                                                               encoding="utf-8")

    def staging(self, tenant: str) -> Path:
        from simbdp.profiles import load_platform

        return load_platform(self.path).config.staging_dir(tenant)


def ingest_cli(home: Home, tenant: str, files: list[Path]) -> tuple[float, float]:
    """The whole ``simbdp ingest`` process: (seconds, peak PSS MB of its tree)."""
    secs, peak, out = run_measured([CLI, "ingest", *map(str, files), "--tenant", tenant,
                                    "--home", str(home.path)])
    if "processed" not in out:
        raise SystemExit(f"simbdp ingest did not process {files[0].name}:\n{out}")
    return secs, peak


class Server:
    """``simbdp serve`` on ``home``, as a subprocess of the real command."""

    def __init__(self, home: Home, timeout: float = 60.0):
        self.home = home
        self.log_path = home.root / "serve.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen([CLI, "serve", "--home", str(home.path)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        db = home.path / "state.sqlite"
        deadline = time.monotonic() + timeout
        while not db.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"simbdp serve did not start; see {self.log_path}")
            time.sleep(0.05)
        self.db = sqlite3.connect(db, timeout=30)
        self._src = home.root / "src"
        self._src.mkdir(exist_ok=True)
        # a first file, before any clock: the watcher and the warm workers are up after it
        first = home.root / "comments-warmup.csv"
        pacsv.write_csv(reddit_table(1, seed=123_456, start_id=10**9), first)
        try:
            self.drop_and_wait(self.stage(WARMUP, [first], [first.name]), [WARMUP], timeout)
        except BaseException:
            self.stop()
            raise

    def stage(self, tenant: str, files: list[Path], names: list[str]) -> list[tuple[Path, Path]]:
        """Copy ``files`` beside the staging folder (same filesystem, before the clock)."""
        staging = self.home.staging(tenant)
        staging.mkdir(parents=True, exist_ok=True)
        return [(Path(shutil.copyfile(f, self._src / f"{tenant}.{n}")), staging / n)
                for f, n in zip(files, names, strict=True)]

    def drop_and_wait(self, drops: list[tuple[Path, Path]], tenants: list[str],
                      timeout: float = 1800.0) -> tuple[float, float]:
        """Rename the staged copies in; (seconds from the first drop to the last record's
        end, peak PSS MB of serve's tree meanwhile)."""
        sampler = Sampler(self.proc.pid).start()
        try:
            started = time.time()
            for src, dst in drops:
                os.rename(src, dst)
            last = self.wait(len(drops), tenants, started, timeout)
        finally:
            peak = sampler.stop()
        return last - started, peak

    def wait(self, n: int, tenants: list[str], since: float, timeout: float) -> float:
        """Wait until ``n`` records of ``tenants`` started after ``since`` are processed;
        the last one's end. A file rejected or failed stops the benchmark."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                done, last, bad = self._progress(tenants, since)
            except sqlite3.OperationalError:  # serve has not made its tables yet
                done, last, bad = 0, None, None
            if bad:
                raise SystemExit(f"a benchmark file was not processed: {bad!r}")
            if done >= n:
                return float(last)
            if time.monotonic() > deadline:
                raise SystemExit(f"only {done}/{n} files done after {timeout:.0f} s; "
                                 f"see {self.log_path}")
            time.sleep(0.01)

    def _progress(self, tenants: list[str], since: float) -> tuple[int, Any, Any]:
        marks = ",".join("?" * len(tenants))
        done, last = self.db.execute(
            f"SELECT count(*), max(ended_at) FROM ingestions WHERE tenant IN ({marks}) "
            "AND started_at >= ? AND ended_at IS NOT NULL AND outcome = 'processed'",
            [*tenants, since]).fetchone()
        bad = self.db.execute(
            f"SELECT source, outcome, reason FROM ingestions WHERE tenant IN ({marks}) "
            "AND outcome NOT IN ('processed', 'waiting', 'running') "
            "AND ended_at IS NOT NULL", tenants).fetchone()
        return int(done), last, bad

    def accepted(self, tenant: str, name: str, timeout: float = 30.0) -> float:
        """When the record of ``name`` was started (the file accepted)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.db.execute("SELECT started_at FROM ingestions WHERE tenant = ? AND "
                                  "source = ? ORDER BY started_at DESC LIMIT 1",
                                  [tenant, name]).fetchone()
            if row:
                return float(row[0])
            time.sleep(0.001)
        raise SystemExit(f"{name} was not accepted within {timeout:.0f} s")

    def stop(self) -> None:
        self.db.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
