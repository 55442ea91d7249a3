"""The batchingestmanager: takes staged files, checks them, schedules them fairly across
tenants and runs them in warm workers.

Every file that reaches a staging folder ends in ``processed/``, ``rejected/`` or ``failed/``
with a reason file, and every attempt leaves an ingestion record. A file is first renamed
from staging into ``inflight/`` (the platform's folder, not the tenant's),
then checked there through an open descriptor (:mod:`simbdp.batch.checks`) and read there by
the worker, so what is read is what was checked. Warm worker processes
(:mod:`simbdp.batch.pool`) run one file at a time each; if one dies (crash, SIGKILL), its
transaction never committed, the file is still in ``inflight/`` and is retried by a fresh
worker; after a restart, ``recover`` hands such files to the next scan. What becomes of a
file after each attempt, retries and waits for a sink that is away included, is
:mod:`simbdp.batch.outcomes`.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from simbdp.batch.checks import check_count, check_file, reserve_quota
from simbdp.batch.outcomes import Outcomes, Retry
from simbdp.batch.pool import WorkerPool
from simbdp.batch.protocol import FileJob, JobResult
from simbdp.batch.scheduler import FairQueue, group_with, tenant_limit
from simbdp.batch.staging import (
    FileTracker,
    claim,
    ignored,
    inflight_dir,
    inflight_files,
    prepare_tenant_dirs,
)
from simbdp.batch.tables import ensure_tables
from simbdp.batch.watcher import StagingWatcher
from simbdp.errors import Rejected
from simbdp.observe.logs import get_logger
from simbdp.profiles.loader import Platform
from simbdp.profiles.models import TenantProfile
from simbdp.state import StateStore

__all__ = ["BatchIngestManager", "Submission"]


@dataclass
class Submission:
    """The manager's answer for one file: accepted (with its record) or rejected (why)."""

    path: Path
    record_id: str
    accepted: bool
    reason: str | None = None


class BatchIngestManager:
    """Runs batch ingestion for every tenant of a platform."""

    def __init__(self, platform: Platform, store: StateStore, *, warm: int | None = None,
                 ensure: bool = True):
        """``warm``: workers to start now (default ``workers``); more start when needed.
        ``ensure``: create every tenant's tables now (else each worker does before its first
        file of a tenant, as it always does)."""
        self.platform, self.config, self.store = platform, platform.config, store
        self.queue: FairQueue[FileJob] = FairQueue(
            per_tenant=lambda t: tenant_limit(self.config, self.platform.tenants.get(t)))
        self.tracker = FileTracker(self.config.stable_secs)
        self.log = get_logger("simbdp.batch")
        self.outcomes = Outcomes(self.config, store, self.log)
        self._retries: list[Retry] = []
        # queued, running or waiting for a retry, with the profile each was accepted under:
        # it finishes under it, whatever a reload brings meanwhile
        self._taken: dict[Path, TenantProfile] = {}
        self._orphans: dict[str, list[Path]] = {}  # in flight when a manager stopped
        self._pending: Platform | None = None  # handed over by apply(), taken by the loop
        self._pending_lock = threading.Lock()
        self._watcher: StagingWatcher | None = None
        self.pool = WorkerPool(self.config.workers if warm is None
                               else min(warm, self.config.workers))
        for tenant in platform.tenants:
            prepare_tenant_dirs(self.config, tenant)
        if ensure:
            ensure_tables(self.config, list(platform.tenants.values()), self.log)

    def apply(self, platform: Platform) -> None:
        """Take a reloaded platform (any thread): the manager's loop switches to it before
        its next scan. Files already taken finish under the profile they were taken with."""
        with self._pending_lock:
            self._pending = platform

    def _refresh(self) -> None:
        """Switch to the platform handed to :meth:`apply`, if any: new and changed tenants
        get their folders, tables and a watch; removed, broken and disabled tenants are no
        longer scanned (their staging files stay where they are)."""
        with self._pending_lock:
            new, self._pending = self._pending, None
        if new is None:
            return
        old, self.platform = self.platform, new
        fresh = [p for t, p in new.tenants.items() if old.tenants.get(t) != p]
        for profile in fresh:
            tenant = profile.tenant_id
            staging = prepare_tenant_dirs(self.config, tenant)
            if self._watcher is not None:
                self._watcher.watch(tenant, staging)
            if tenant not in old.tenants:  # back (or new): files a stopped manager left
                self._adopt_orphans(tenant)
        ensure_tables(self.config, fresh, self.log)

    # recovery ------------------------------------------------------------------------------
    def recover(self) -> int:
        """After a restart: attempts left running are interrupted and their quota released;
        their files are still in ``inflight/`` and the next scan takes them again."""
        rows = self.store.interrupt_running("the manager stopped before this attempt finished")
        for r in rows:
            if r["quota_day"]:
                self.store.release_files(r["tenant"], r["quota_day"], 1, r["bytes"])
        for tenant in self.platform.tenants:
            self._adopt_orphans(tenant)
        if rows or self._orphans:
            self.log.info("recovered", interrupted=len(rows),
                          in_flight=sum(len(v) for v in self._orphans.values()))
        return len(rows)

    def _adopt_orphans(self, tenant: str) -> None:
        """Hand the next scan the tenant's files in ``inflight/`` that no job holds."""
        left = [p for p in inflight_files(self.config, tenant) if p not in self._taken]
        if left:
            self._orphans[tenant] = left

    # intake --------------------------------------------------------------------------------
    def submit(self, tenant: str, paths: list[Path]) -> list[Submission]:
        """Check and queue files that are in the tenant's staging folder.

        An explicit request (a CLI call or an upload) of more files than the profile allows
        in one ingestion is rejected as a whole.
        """
        profile = self.platform.tenant(tenant)
        try:
            check_count(profile, len(paths))
        except Rejected as e:
            return [self._reject(tenant, p, e) for p in paths]
        return [self._submit_one(profile, p) for p in paths]

    def _submit_one(self, profile: TenantProfile, staged: Path) -> Submission:
        tenant = profile.tenant_id
        self.tracker.forget(staged)
        path = staged
        if staged.parent.parent != inflight_dir(self.config, tenant):
            try:
                path = claim(self.config, tenant, staged)
            except FileNotFoundError:
                return self._reject(tenant, staged, Rejected(
                    f"tenant {tenant!r}: {staged.name!r} was gone from the staging folder "
                    "before it could be taken", "gone"))
        try:
            nbytes = check_file(profile, path)
        except Rejected as e:
            return self._reject(tenant, path, e)
        try:
            day = reserve_quota(self.store, profile, path.name, nbytes)
        except Rejected as e:
            return self._reject(tenant, path, e, nbytes)
        route = profile.route_file(path.name)
        app = route[0].name if route and route[0] else None
        rid = self.store.start_record(tenant, "batch", path.name, bytes=nbytes, app=app,
                                      quota_day=day)
        job = FileJob(record_id=rid, tenant=tenant, path=path, nbytes=nbytes, quota_day=day)
        self._taken[path] = profile
        self.queue.push(tenant, job)
        self.log.info("accepted", tenant=tenant, file=path.name, bytes=nbytes, record=rid)
        return Submission(path, rid, True)

    def _reject(self, tenant: str, path: Path, err: Rejected, nbytes: int | None = None
                ) -> Submission:
        rid = self.outcomes.reject(tenant, path, err, nbytes)
        self.tracker.forget(path)
        return Submission(path, rid, False, str(err))

    def scan(self, *, pump: bool = False) -> int:
        """Look at every staging folder; submit files that are complete (``pump``: start
        workers on them as they are submitted). Returns how many."""
        self._refresh()
        n = 0
        for tenant, profile in self.platform.tenants.items():
            if not profile.enabled:  # disabled: its files wait in staging, untouched
                continue
            for path in self._orphans.pop(tenant, []):
                self._submit_one(profile, path)
                n += 1
            staging = self.config.staging_dir(tenant)
            ready: list[Path] = []
            try:
                entries = sorted(os.scandir(staging), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            for entry in entries:
                path = Path(entry.path)
                if (ignored(entry.name) or path in self._taken
                        or entry.is_dir(follow_symlinks=False)):
                    continue
                if self.tracker.ready(path):
                    ready.append(path)
            # files dropped together: at most max_files_per_ingestion per scan, others wait
            for path in ready[: profile.batch.max_files_per_ingestion]:
                self._submit_one(profile, path)
                if pump:  # workers start on the first files while the rest are checked
                    self.pump()
                n += 1
        return n

    # running -------------------------------------------------------------------------------
    def pump(self) -> None:
        """Start queued jobs while workers are free."""
        now = time.monotonic()
        due = [j for t, j in self._retries if t <= now]
        self._retries = [(t, j) for t, j in self._retries if t > now]
        for job in due:
            self.queue.push(job.tenant, job)
        while len(self.pool) < self.config.workers:
            item = self.queue.pop()
            if item is None:
                return
            tenant, job = item
            profile = self._taken.get(job.path) or self.platform.tenant(tenant)
            if job.waits:
                self.store.mark_record(job.record_id, "running")
            jobs = [job, *group_with(self.queue, self.config, job, profile, self._taken)]
            # more of this tenant's files queued: the worker keeps its sinks and app warm
            more = self.queue.pending(tenant) > 0
            run = self.pool.start(self.config, profile, jobs, more)
            for j in jobs:
                self.log.info("started", tenant=tenant, file=j.path.name, record=j.record_id,
                              attempt=j.attempt, pid=run.process.pid, group=len(jobs))

    def close(self) -> None:
        """Stop the idle workers (running ones are the caller's to finish first)."""
        self.pool.close()

    def wait(self, timeout: float, wake: int | None = None) -> int:
        """Wait up to ``timeout`` for running jobs, reading their results as they come;
        finalize those that ended, kill those past their deadline. Returns how many ended.
        ``wake``: a descriptor that ends the wait when readable (the staging watcher's)."""
        ended = self.pool.wait(timeout, wake)
        for run, results in ended:
            self.queue.done(run.tenant)
            for job, result in zip(run.jobs, results, strict=True):
                self._finalize(job, result)
        return len(ended)

    def _finalize(self, job: FileJob, result: JobResult) -> None:
        again = self.outcomes.finish(job, result)
        if again is not None:
            self._retries.append(again)
        else:
            self._taken.pop(job.path, None)

    # loops ---------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self.pool.running or len(self.queue) or self._retries)

    def run_until_idle(self, timeout_secs: float | None = None) -> None:
        """Run queued jobs (and their retries) until none is left."""
        deadline = None if timeout_secs is None else time.monotonic() + timeout_secs
        while self.busy:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("batch jobs still running at the deadline")
            self.pump()
            self.wait(0.2)

    def serve(self, stop: threading.Event, *, idle_exit: bool = False) -> None:
        """Watch staging folders and ingest until ``stop`` is set; then finish the files in
        flight (queued ones stay in staging for the next start) and return."""
        self.recover()
        watcher = self._watcher = StagingWatcher()
        for tenant in self.platform.tenants:
            watcher.watch(tenant, prepare_tenant_dirs(self.config, tenant))
        watcher.start()
        next_scan = 0.0
        try:
            while not stop.is_set():
                if self._pending is not None:
                    self._refresh()
                    next_scan = 0.0  # a new tenant's files already there are taken now
                events = watcher.drain()
                for _tenant, path, state in events:
                    if state == "complete":
                        self.tracker.mark_complete(path)
                    elif state == "writing":
                        self.tracker.mark_writing(path)
                if events or time.monotonic() >= next_scan:
                    self.scan(pump=True)
                    # look again soon while files wait to be complete, else at the rescan period
                    wait = max(self.config.stable_secs / 2, 0.1) if self.tracker.pending \
                        else self.config.rescan_secs
                    next_scan = time.monotonic() + min(wait, self.config.rescan_secs)
                self.pump()
                self.wait(0.1, wake=watcher.fileno())  # a staging event wakes it at once
                if idle_exit and not self.busy and not self.tracker.pending:
                    break
        finally:
            self._watcher = None
            watcher.stop()
            self._drain_on_stop()
            self.close()

    def _drain_on_stop(self) -> None:
        """Let running files finish for ``stop_grace_secs``, then kill their workers: those
        attempts are interrupted and their files wait in ``inflight/`` for the next start,
        like files queued but not started."""
        grace = time.monotonic() + self.config.stop_grace_secs
        while self.pool.running and time.monotonic() < grace:
            self.wait(min(0.5, max(0.0, grace - time.monotonic())))
        for run in self.pool.kill_running():
            self.queue.done(run.tenant)
            for job in run.jobs:
                self._interrupt(job, f"the manager stopped; the worker was still on the file "
                                f"after stop_grace_secs ({self.config.stop_grace_secs:g} s)")
        for _tenant, job in self._queued_jobs():
            self._interrupt(job, "the manager stopped before this file started")

    def _interrupt(self, job: FileJob, reason: str) -> None:
        # recover() in the next start hands the file, still in inflight/, to its first scan
        self.outcomes.interrupt(job, reason)
        self._taken.pop(job.path, None)

    def _queued_jobs(self) -> list[tuple[str, FileJob]]:
        out = []
        while (item := self.queue.pop()) is not None:
            out.append(item)
            self.queue.done(item[0])
        out.extend((j.tenant, j) for _, j in self._retries)
        self._retries.clear()
        return out
