"""Shared helpers of the benchmarks: data files, timing, peak RSS of a process tree."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psutil

from simbdp.datagen import write_reddit_csv

DATA = Path(__file__).parent / "data"
REDDIT_DDL = ("created_utc BIGINT, ups BIGINT, subreddit VARCHAR NOT NULL, id VARCHAR NOT NULL, "
              "author VARCHAR, score BIGINT, body VARCHAR")


def reddit_csv(rows: int) -> Path:
    """A cached generated Reddit-comments CSV with ``rows`` rows."""
    path = DATA / f"reddit-{rows}.csv"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        write_reddit_csv(tmp, rows)
        tmp.replace(path)
    return path


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@contextmanager
def peak_rss(pid: int | None = None, interval: float = 0.05) -> Iterator[dict[str, float]]:
    """Sample the memory of a process and all its descendants; yields {'peak_mb': ...}.

    ``at_peak`` splits the peak by role (manager, worker, app, other; forkserver in old runs);
    ``peak_rss_mb`` is the peak of the plain RSS sum, which counts shared pages once per process.
    Summed as PSS (proportional set size): pages shared by the forked workers (pyarrow,
    duckdb) count once, split between them, instead of once per process as RSS would.
    """
    proc = psutil.Process(pid)
    out: dict[str, Any] = {"peak_mb": 0.0, "at_peak": {}, "peak_rss_mb": 0.0,
                           "rss_at_peak": {}}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            total, rss, parts, rss_parts = 0, 0, {}, {}
            try:
                procs = [proc, *proc.children(recursive=True)]
            except psutil.Error:
                procs = [proc]
            for p in procs:
                with suppress(psutil.Error):
                    info = p.memory_full_info()
                    total += info.pss
                    rss += info.rss
                    role = _role(p) if p is not proc else "manager"
                    parts[role] = parts.get(role, 0.0) + info.pss / 1e6
                    rss_parts[role] = rss_parts.get(role, 0.0) + info.rss / 1e6
            if total / 1e6 > out["peak_mb"]:
                out["peak_mb"], out["at_peak"] = total / 1e6, parts
            if rss / 1e6 > out["peak_rss_mb"]:
                out["peak_rss_mb"], out["rss_at_peak"] = rss / 1e6, rss_parts
            stop.wait(interval)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield out
    finally:
        stop.set()
        t.join()


def _role(p: psutil.Process) -> str:
    cmd = " ".join(p.cmdline())
    if "simbdp.apps.child" in cmd:
        return "app"
    if "simbdp.batch.worker" in cmd:
        return "worker"
    if "forkserver" not in cmd:
        return "other"  # multiprocessing's resource tracker
    parent = p.parent()
    return "worker" if parent and "forkserver" in " ".join(parent.cmdline()) else "forkserver"
