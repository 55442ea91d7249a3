"""Warm batch workers: processes that run file jobs one after another, fed over a pipe.

The manager starts each worker as ``python -m simbdp.batch.worker`` (a fresh interpreter that
imports the batch path only: pyarrow, duckdb, the job code; never the CLI, the API or the
``__main__`` of whoever started it) and sends it one job at a time (a file, or small files of
one tenant for one transaction: :mod:`simbdp.batch.group`); the worker answers each with one
bounded message, a result per file. Between files of one tenant it keeps its sinks, ensured
tables and app runners (:class:`~simbdp.batch.warm.Warm`). A worker that dies, or is killed at the
per-file deadline, loses only its uncommitted transaction, exactly like a process per file.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from contextlib import suppress
from multiprocessing.connection import Connection
from typing import Any

from simbdp.batch.protocol import JobResult

__all__ = ["MAX_MESSAGE_BYTES", "WorkerProcess", "encode_results", "prepare_prestarted", "prestart",
           "take_prestarted"]

#: the most a worker may send back; a longer reason is cut to fit, in the worker
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: the most a job (platform config, profile, job) may take
MAX_JOB_BYTES = 16 * 1024 * 1024
_MAX_FULL_REASON = 1_000_000
_CLEAN = ("processed", "duplicate", "rejected")


def encode_results(results: list[JobResult]) -> bytes:
    """The results pickled, under ``MAX_MESSAGE_BYTES`` (huge reasons are cut to fit)."""
    from simbdp.state import short_reason  # the worker's side only: the manager's stays light

    for result in results:
        if result.reason is not None and len(result.reason) > _MAX_FULL_REASON:
            result.reason = short_reason(result.reason, _MAX_FULL_REASON)
    data = pickle.dumps(results)
    if len(data) > MAX_MESSAGE_BYTES:
        share = max(1000, 100_000 // len(results))
        for result in results:
            result.reason = short_reason(result.reason, share)
            result.rule_failures = dict(list(result.rule_failures.items())[:share // 100])
        data = pickle.dumps(results)
    return data


class WorkerProcess:
    """The manager's handle on one warm worker (``pid``, ``is_alive``, ``join``, ``exitcode``,
    ``sentinel``: a pidfd that becomes readable when the process ends)."""

    def __init__(self) -> None:
        job_r, job_w = os.pipe()
        res_r, res_w = os.pipe()
        try:
            self._popen = subprocess.Popen(
                [sys.executable, "-m", "simbdp.batch.worker", str(job_r), str(res_w)],
                pass_fds=(job_r, res_w), stdin=subprocess.DEVNULL)
        finally:
            os.close(job_r)
            os.close(res_w)
        self.pid = self._popen.pid
        self.jobs = Connection(job_w, readable=False)
        self.results = Connection(res_r, writable=False)
        self.sentinel = os.pidfd_open(self.pid)
        self.tenant: str | None = None  # the tenant of its last file: what it may keep warm

    def send(self, config: Any, profile: Any, jobs: list[Any], more: bool) -> None:
        """Hand it jobs (several: small files of one tenant, in one transaction); ``more``:
        further files of the same tenant are queued. Raises OSError if the worker is gone."""
        self.jobs.send_bytes(pickle.dumps((config, profile, jobs, more)))

    def prepare(self, config: Any, profile: Any) -> None:
        """Say whose file comes next, before it is accepted: the worker imports the modules
        of the tenant's sinks meanwhile. It writes nothing and answers nothing. Raises
        OSError if the worker is gone."""
        self.jobs.send_bytes(pickle.dumps((config, profile, [], False)))

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        with suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout)

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()

    def close(self) -> None:
        """Close its pipes: an idle worker exits at once, a busy one after its file."""
        for c in (self.jobs, self.results):
            c.close()
        if self.sentinel >= 0:
            os.close(self.sentinel)
            self.sentinel = -1


_prestarted: list[WorkerProcess] = []


def prestart(n: int) -> None:
    """Start ``n`` workers now, before the caller's own imports: ``simbdp ingest`` starts its
    worker first thing, so that the worker's imports run beside the command's."""
    _prestarted.extend(WorkerProcess() for _ in range(n))


def prepare_prestarted(config: Any, profile: Any) -> None:
    """Tell the workers :func:`prestart` started whose file comes (``WorkerProcess.prepare``):
    ``simbdp ingest`` does once it has loaded the tenant's profile."""
    for proc in _prestarted:
        with suppress(OSError):  # gone: the manager replaces it
            proc.prepare(config, profile)


def take_prestarted(n: int) -> list[WorkerProcess]:
    """Up to ``n`` of the workers :func:`prestart` started (a manager takes them over)."""
    taken = _prestarted[:n]
    del _prestarted[:n]
    return taken


def serve_jobs(jobs: Connection, results: Connection) -> None:
    """Run jobs until the manager closes the pipe. A DuckDB session kept for the tenant's
    next file is released if none comes within its hold time."""
    # imported here, in the worker's process only: the manager imports this module for
    # WorkerProcess and never needs pyarrow, DuckDB or the app runner
    from simbdp.batch.group import run_file_group
    from simbdp.batch.job import run_file_job
    from simbdp.batch.warm import Warm

    warm = Warm()
    try:
        while True:
            if warm.holding and not jobs.poll(warm.hold_left()):
                warm.release()
                continue
            try:
                config, profile, batch, more = pickle.loads(jobs.recv_bytes(MAX_JOB_BYTES))
            except EOFError:
                return
            if not batch:  # WorkerProcess.prepare: no file yet
                _load_sinks(config, profile)
                continue
            warm.switch(profile)
            try:
                done = (run_file_group(config, profile, batch, warm) if len(batch) > 1
                        else [run_file_job(config, profile, batch[0], warm)])
            except Exception as e:  # a bug in the platform: fail these files, keep serving
                done = [JobResult(outcome="failed", code="internal",
                                  reason=f"internal error: {type(e).__name__}: {e}")
                        for _ in batch]
            warm.settle(clean=all(r.outcome in _CLEAN for r in done), more=more)
            try:
                results.send_bytes(encode_results(done))
            except OSError:  # the manager is gone
                return
    finally:
        warm.close()


def _load_sinks(config: Any, profile: Any) -> None:
    """Import the modules of the sinks ``profile``'s tables write to."""
    from simbdp.coredms.base import load_sink

    for name in sorted({s for t in profile.tables for s in t.sinks}):
        settings = config.sinks.get(name)
        # one that cannot load (a driver missing) fails the file with its reason, as ever
        with suppress(Exception):
            if settings is not None:
                load_sink(settings.kind)


def main() -> None:
    # Ctrl-C reaches the whole process group: the manager, not the key, decides when a worker
    # stops (it lets files in flight finish for stop_grace_secs, then kills their workers)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    jobs = Connection(int(sys.argv[1]), writable=False)
    results = Connection(int(sys.argv[2]), readable=False)
    serve_jobs(jobs, results)
    # its sinks, app runners and threads are closed and every answer sent: exit without the
    # interpreter's teardown (freeing pyarrow's and DuckDB's modules), which the manager
    # would wait for
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
