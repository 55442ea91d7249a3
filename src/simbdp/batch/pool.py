"""The manager's warm workers: the idle ones, the running ones with their deadlines, and the one
bounded answer each running worker sends back.

A worker goes back to the idle list after an answer, warm for its tenant; one that died, sent
a bad answer or ran past its file's deadline (``batch.max_file_secs``) is killed and its
files get results that say so.
"""

from __future__ import annotations

import os
import pickle
import signal
import time
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from simbdp.batch.protocol import FileJob, JobResult
from simbdp.batch.worker import MAX_MESSAGE_BYTES, WorkerProcess, take_prestarted
from simbdp.profiles.models import TenantProfile
from simbdp.profiles.platform import PlatformConfig

__all__ = ["Running", "WorkerPool"]


@dataclass
class Running:
    """Files a worker is on, and what it has answered so far."""

    jobs: list[FileJob]  # one file, or small files of one tenant in one transaction
    process: WorkerProcess
    conn: Connection
    started: float
    deadline: float
    profile: TenantProfile  # the profile the files were accepted under
    results: list[JobResult] | None = None
    heard: bool = False  # the pipe said its one thing (results, EOF or a bad message)

    @property
    def tenant(self) -> str:
        return self.jobs[0].tenant

    def names(self) -> str:
        first = repr(self.jobs[0].path.name)
        return first if len(self.jobs) == 1 else f"{first} and {len(self.jobs) - 1} more"


class WorkerPool:
    """Warm worker processes, each on one job (a file, or small files of one tenant) at a
    time; ``running`` is keyed by the worker's sentinel."""

    def __init__(self, warm: int):
        """Start ``warm`` workers now (each imports pyarrow, duckdb...), not with the first
        file; those :func:`~simbdp.batch.worker.prestart` started are taken first."""
        self.idle: list[WorkerProcess] = take_prestarted(warm)
        self.idle += [WorkerProcess() for _ in range(warm - len(self.idle))]
        self.running: dict[int, Running] = {}

    def __len__(self) -> int:
        return len(self.running)

    def start(self, config: PlatformConfig, profile: TenantProfile, jobs: list[FileJob],
              more: bool) -> Running:
        """Hand ``jobs`` to an idle worker (a new one if none is idle) with
        ``profile.batch.max_file_secs`` to answer; ``more``: further files of the tenant
        are queued, so the worker keeps its sinks and app warm."""
        proc = self._send(jobs[0].tenant, config, profile, jobs, more)
        started = time.monotonic()
        run = Running(jobs, proc, proc.results, started, started + profile.batch.max_file_secs,
                      profile)
        self.running[proc.sentinel] = run
        return run

    def wait(self, timeout: float, wake: int | None = None
             ) -> list[tuple[Running, list[JobResult]]]:
        """Wait up to ``timeout`` for running workers, reading their answers as they come;
        return those that ended with a result per file, the overdue ones killed.
        ``wake``: a descriptor that ends the wait when readable (the staging watcher's)."""
        wakes = [wake] if wake is not None else []
        if not self.running:
            if wakes:
                wait(wakes, timeout)
            elif timeout > 0:
                time.sleep(timeout)
            return []
        now = time.monotonic()
        timeout = max(0.0, min(timeout, min(r.deadline for r in self.running.values()) - now))
        pipes = {r.conn: r for r in self.running.values() if not r.heard}
        ready = wait([*self.running, *pipes, *wakes], timeout)
        for obj in ready:
            if obj in pipes:
                self._hear(pipes[obj])  # type: ignore[index]
        # ended: answered (the worker goes back to the pool) or gone (the pipe closed or
        # the process ended)
        ended = [s for s, r in self.running.items() if r.heard or s in ready]
        out = [self._collect(self.running.pop(sentinel)) for sentinel in ended]
        now = time.monotonic()
        for sentinel, run in list(self.running.items()):
            if now >= run.deadline:
                del self.running[sentinel]
                out.append(self._overdue(run))
        return out

    def kill_running(self) -> list[Running]:
        """Kill every running worker; return what they were on (no results)."""
        runs = list(self.running.values())
        self.running.clear()
        for run in runs:
            self._discard(run.process)
        return runs

    def close(self) -> None:
        """Stop the idle workers (running ones are the caller's to finish first)."""
        for proc in self.idle:
            proc.close()  # an idle worker exits on the closed pipe
        for proc in self.idle:
            proc.join(timeout=5)
            if proc.is_alive():
                self._discard(proc)
        self.idle.clear()

    def _send(self, tenant: str, config: PlatformConfig, profile: TenantProfile,
              jobs: list[FileJob], more: bool) -> WorkerProcess:
        """Hand a job to an idle worker, the one warm for this tenant if any; a worker found
        dead is replaced."""
        while self.idle:
            warm = [w for w in self.idle if w.tenant == tenant]
            proc = (warm or self.idle)[-1]
            self.idle.remove(proc)
            try:
                if not proc.is_alive():
                    raise BrokenPipeError
                proc.send(config, profile, jobs, more)
            except OSError:
                self._discard(proc)
                continue
            proc.tenant = tenant
            return proc
        proc = WorkerProcess()
        proc.tenant = tenant
        # a fresh worker that cannot take it has died: wait() sees that and retries the file
        with suppress(OSError):
            proc.send(config, profile, jobs, more)
        return proc

    def _hear(self, run: Running) -> None:
        """Read the worker's one message (bounded) while it runs, so it never blocks on a
        full pipe."""
        run.heard = True
        try:
            results = pickle.loads(run.conn.recv_bytes(MAX_MESSAGE_BYTES))
            if not (isinstance(results, list) and len(results) == len(run.jobs)):
                raise pickle.UnpicklingError(f"{len(run.jobs)} results expected")
            run.results = results
        except (EOFError, OSError, pickle.UnpicklingError) as e:
            if not isinstance(e, EOFError):
                run.results = [JobResult(outcome="failed", code="internal", reason=(
                    f"tenant {run.tenant!r}: {j.path.name!r}: the worker's answer could not "
                    f"be read: {e}")) for j in run.jobs]

    def _overdue(self, run: Running) -> tuple[Running, list[JobResult]]:
        limit = run.profile.batch.max_file_secs
        self._discard(run.process)
        if run.results is None:  # an answer that came in time counts
            # one file: it failed; small files that shared a transaction: each alone again
            outcome = "failed" if len(run.jobs) == 1 else "retry"
            run.results = [JobResult(outcome=outcome, code="deadline", reason=(
                f"tenant {j.tenant!r}: {run.names()}: the worker ran past the deadline of "
                f"{limit:g} s per file (batch.max_file_secs) and was killed"))
                for j in run.jobs]
        return self._collect(run)

    def _collect(self, run: Running) -> tuple[Running, list[JobResult]]:
        if not run.heard:
            if not run.conn.closed and run.conn.poll():
                self._hear(run)
            run.heard = True
        results = run.results
        if results is not None and run.process.sentinel >= 0:
            self.idle.append(run.process)  # warm for the next file
        else:
            run.process.join(timeout=5)
            self._discard(run.process)
        if results is None:
            code = run.process.exitcode
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
            results = [JobResult(outcome="retry", code="worker_died",
                                 reason=f"the worker ingesting {run.names()} died ({how})")
                       for _ in run.jobs]
        return run, results

    @staticmethod
    def _discard(proc: WorkerProcess) -> None:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=10)
        proc.close()
