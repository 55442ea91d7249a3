"""Shared helpers of the benchmarks: the result record, timing, memory of a process tree,
the machine's description.

Every benchmark reports :class:`Record` dicts, the shape ``python -m benchmarks.render``
reads (the stream benchmark's ``--json`` writes the same shape)::

    {"scenario": "reddit", "what": "-> DuckDB", "engine": "simbdp serve",
     "seconds": 1.63, "runs": [1.63, 1.66, 1.62], "rate": 613_000.0, "unit": "rows/s",
     "vs_bare": 0.53}

``vs_bare`` is the engine's rate over the bare engine's rate in the same scenario and run
(``None`` for the bare engine itself). Optional keys: ``peak_pss_mb`` (peak PSS of the
process tree), ``note``.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from importlib import metadata
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import psutil

__all__ = ["DATA", "REDDIT_DDL", "Record", "Sampler", "machine_info", "median", "peak_pss",
           "peak_rss", "record", "reddit_csv", "run_measured", "timed"]

DATA = Path(__file__).parent / "data"
REDDIT_DDL = ("created_utc BIGINT, ups BIGINT, subreddit VARCHAR NOT NULL, id VARCHAR NOT NULL, "
              "author VARCHAR, score BIGINT, body VARCHAR")


class Record(TypedDict):
    scenario: str
    what: str
    engine: str
    seconds: float
    runs: list[float]
    rate: float
    unit: str
    vs_bare: float | None
    peak_pss_mb: NotRequired[float | None]
    note: NotRequired[str]


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def record(scenario: str, what: str, engine: str, runs: list[float], amount: float, unit: str,
           bare: list[float] | None = None, peak_pss_mb: list[float] | None = None,
           note: str = "") -> Record:
    """A record from the runs' seconds; ``amount`` units (rows, files, ...) per run; the rate
    is over the median; ``vs_bare`` compares it with the median of ``bare``'s runs."""
    secs = median(runs)
    out: Record = {"scenario": scenario, "what": what, "engine": engine,
                   "seconds": round(secs, 4), "runs": [round(r, 4) for r in runs],
                   "rate": round(amount / secs, 2) if secs > 0 else 0.0, "unit": unit,
                   "vs_bare": round(median(bare) / secs, 4) if bare else None}
    if peak_pss_mb:
        out["peak_pss_mb"] = round(max(peak_pss_mb), 1)
    if note:
        out["note"] = note
    return out


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _pss_kb(pid: int) -> int:
    """Pss of one process from /proc/PID/smaps_rollup (kB); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler:
    """Samples the PSS of a process and all its descendants every ``interval`` seconds in a
    thread; ``peak_mb`` is the highest sum seen, ``at_peak`` that sum split by role.

    PSS (proportional set size) splits each shared page between the processes mapping it, so
    pyarrow's and DuckDB's libraries mapped by a server and its workers count once in the sum,
    not once per process as a sum of RSS would.
    """

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.peak_mb = 0.0
        self.at_peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                procs = [root]
            parts: dict[str, float] = {}
            for p in procs:
                role = "main" if p.pid == self.pid else _role(p)
                parts[role] = parts.get(role, 0.0) + _pss_kb(p.pid) / 1024
            total = sum(parts.values())
            if total > self.peak_mb:
                self.peak_mb, self.at_peak = total, parts
            self._stop.wait(self.interval)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


@contextmanager
def peak_pss(pid: int | None = None, interval: float = 0.05) -> Iterator[Sampler]:
    """Sample the tree of ``pid`` (default: this process) while the block runs."""
    s = Sampler(pid or os.getpid(), interval).start()
    try:
        yield s
    finally:
        s.stop()


@contextmanager
def peak_rss(pid: int | None = None, interval: float = 0.05) -> Iterator[dict[str, Any]]:
    """:func:`peak_pss` as a dict (``peak_mb``, ``at_peak``), for the benchmarks that
    measure in their own process (bench_encrypt)."""
    out: dict[str, Any] = {"peak_mb": 0.0, "at_peak": {}}
    with peak_pss(pid, interval) as s:
        try:
            yield out
        finally:
            s.stop()
            out["peak_mb"], out["at_peak"] = s.peak_mb, s.at_peak


def reddit_csv(rows: int) -> Path:
    """A cached CSV of ``rows`` plain generated comments (:func:`simbdp.datagen.
    write_reddit_csv`; the suite's varied text is :func:`benchmarks.datasets.reddit_csv`)."""
    from simbdp.datagen import write_reddit_csv

    path = DATA / f"reddit-{rows}.csv"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        write_reddit_csv(tmp, rows)
        tmp.replace(path)
    return path


def _role(p: psutil.Process) -> str:
    with suppress(psutil.Error):
        cmd = " ".join(p.cmdline())
        if "simbdp.apps.child" in cmd or "bwrap" in cmd:
            return "app"
        if "simbdp.batch.worker" in cmd:
            return "worker"
    return "other"


def run_measured(cmd: list[str], *, env: dict[str, str] | None = None,
                 timeout: float = 1800.0) -> tuple[float, float, str]:
    """Run a command; (wall seconds, peak PSS MB of its process tree, stdout). Raises
    SystemExit with its output if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    sampler = Sampler(proc.pid).start()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        secs = time.perf_counter() - t0
        peak = sampler.stop()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n"
                         f"{out.decode(errors='replace')[-2000:]}\n"
                         f"{err.decode(errors='replace')[-2000:]}")
    return secs, peak, out.decode(errors="replace")


def machine_info() -> dict[str, Any]:
    """Cores, memory, kernel, Python and the versions of the engines compared."""
    versions = {}
    for pkg in ("simbdp", "duckdb", "pyarrow", "dlt", "psycopg", "aio-pika", "nats-py"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        psql = subprocess.run(["psql", "--version"], capture_output=True, text=True,
                              check=False).stdout.strip()
    except OSError:
        psql = None
    return {"cores": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "kernel": platform.release(), "python": sys.version.split()[0],
            "cpu": _cpu_model(), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
            "psql": psql, "versions": versions}


def _cpu_model() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()
