"""The batchingestmanager: checks constraints, schedules files fairly, runs them in workers.

Every file that reaches a staging folder ends in ``processed/``, ``rejected/`` or ``failed/``
with a reason file, and every attempt leaves an ingestion record. A file is first renamed
from staging into ``inflight/`` (the platform's folder, not the tenant's),
then checked there through an open descriptor and read there by the worker, so what is read
is what was checked. Warm worker processes (:mod:`simbdp.batch.worker`) run one file at a
time each; if one dies (crash, SIGKILL), its transaction never committed, the file is still in
``inflight/`` and is retried, up to ``job_attempts`` times, by a fresh worker; after a restart,
``recover`` hands such files to the next scan.
A file whose sink is unavailable (``TransientError``) waits, its record ``waiting`` with the
reason, and tries again with capped back-off for up to ``sink_outage_max_secs``; only
terminal errors fail a file. A worker still on its file after ``batch.max_file_secs`` is
killed and the file failed. Its one message back is bounded and read while it runs.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from simbdp.batch.protocol import FileJob, JobResult
from simbdp.batch.scheduler import FairQueue, groupable
from simbdp.batch.staging import (
    FileTracker,
    check_name,
    check_regular,
    claim,
    ignored,
    inflight_dir,
    inflight_files,
    move_to_outcome,
    prepare_tenant_dirs,
)
from simbdp.batch.watcher import StagingWatcher
from simbdp.batch.worker import MAX_MESSAGE_BYTES, WorkerProcess, take_prestarted
from simbdp.coredms.base import open_sink
from simbdp.errors import Rejected
from simbdp.formats import detect_format
from simbdp.observe.logs import get_logger
from simbdp.profiles.loader import Platform
from simbdp.profiles.models import TenantProfile
from simbdp.quality.stats import quality_json
from simbdp.state import StateStore, short_reason, today

__all__ = ["BatchIngestManager", "Submission"]

_RETRY_BASE_SECS = 0.5


@dataclass
class Submission:
    """The manager's answer for one file: accepted (with its record) or rejected (why)."""

    path: Path
    record_id: str
    accepted: bool
    reason: str | None = None


@dataclass
class _Running:
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


class BatchIngestManager:
    """Runs batch ingestion for every tenant of a platform."""

    def __init__(self, platform: Platform, store: StateStore, *, warm: int | None = None,
                 ensure: bool = True):
        """``warm``: workers to start now (default ``workers``); more start when needed.
        ``ensure``: create every tenant's tables now (else each worker does before its first
        file of a tenant, as it always does)."""
        self.platform, self.config, self.store = platform, platform.config, store
        self.queue: FairQueue[FileJob] = FairQueue(per_tenant=self._tenant_limit)
        self.tracker = FileTracker(self.config.stable_secs)
        self.log = get_logger("simbdp.batch")
        self._running: dict[int, _Running] = {}
        self._retries: list[tuple[float, FileJob]] = []
        self._taken: set[Path] = set()  # queued, running or waiting for a retry
        self._orphans: dict[str, list[Path]] = {}  # in flight when a manager stopped
        # the profile each taken file was accepted under: it finishes under it, whatever
        # a reload brings meanwhile
        self._profiles: dict[Path, TenantProfile] = {}
        self._pending: Platform | None = None  # handed over by apply(), taken by the loop
        self._pending_lock = threading.Lock()
        self._watcher: StagingWatcher | None = None
        # warm workers, started now (each imports pyarrow, duckdb...), not with the first file
        start = self.config.workers if warm is None else min(warm, self.config.workers)
        self._idle: list[WorkerProcess] = take_prestarted(start)
        self._idle += [WorkerProcess() for _ in range(start - len(self._idle))]
        for tenant in platform.tenants:
            prepare_tenant_dirs(self.config, tenant)
        if ensure:
            self._try_ensure_tables(list(platform.tenants.values()))

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
                left = [p for p in inflight_files(self.config, tenant) if p not in self._taken]
                if left:
                    self._orphans[tenant] = left
        self._try_ensure_tables(fresh)

    def _try_ensure_tables(self, profiles: list[TenantProfile]) -> None:
        """Create the tenants' namespaces and tables in each sink they use. A sink that is
        away is logged, not raised: its files wait and retry as usual (a worker ensures the
        tables again before its first file of a tenant)."""
        for name, settings in self.config.sinks.items():
            users = [p for p in profiles if any(name in t.sinks for t in p.tables)]
            if not users:
                continue
            try:
                sink = open_sink(settings)
                try:
                    for profile in users:
                        sink.ensure_tables(profile)
                finally:
                    sink.close()
            except Exception as e:
                self.log.error("ensure_tables_failed", sink=name,
                               tenants=[p.tenant_id for p in users],
                               reason=f"{type(e).__name__}: {e}")

    def _tenant_limit(self, tenant: str) -> int:
        # DuckDB takes one writer per database file: a second job of the same tenant would
        # only wait for the first one's lock while holding a worker
        profile = self.platform.tenants.get(tenant)
        if profile is None:  # removed meanwhile: its files in flight finish one at a time
            return 1
        kinds = {self.config.sinks[s].kind for t in profile.tables for s in t.sinks}
        return 1 if "duckdb" in kinds else self.config.workers

    # recovery ------------------------------------------------------------------------------
    def recover(self) -> int:
        """After a restart: attempts left running are interrupted and their quota released;
        their files are still in ``inflight/`` and the next scan takes them again."""
        rows = self.store.interrupt_running("the manager stopped before this attempt finished")
        for r in rows:
            if r["quota_day"]:
                self.store.release_files(r["tenant"], r["quota_day"], 1, r["bytes"])
        for tenant in self.platform.tenants:
            left = [p for p in inflight_files(self.config, tenant) if p not in self._taken]
            if left:
                self._orphans[tenant] = left
        if rows or self._orphans:
            self.log.info("recovered", interrupted=len(rows),
                          in_flight=sum(len(v) for v in self._orphans.values()))
        return len(rows)

    # intake --------------------------------------------------------------------------------
    def submit(self, tenant: str, paths: list[Path]) -> list[Submission]:
        """Check and queue files that are in the tenant's staging folder.

        An explicit request (a CLI call or an upload) of more files than the profile allows
        in one ingestion is rejected as a whole.
        """
        profile = self.platform.tenant(tenant)
        limit = profile.batch.max_files_per_ingestion
        if len(paths) > limit:
            reason = (f"tenant {tenant!r}: {len(paths)} files in one ingestion; "
                      f"the profile allows {limit}")
            return [self._reject(tenant, p, Rejected(reason, "too_many_files")) for p in paths]
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
            nbytes = self._check(profile, path)
        except Rejected as e:
            return self._reject(tenant, path, e)
        day = today()
        if not self.store.reserve_files(tenant, day, 1, nbytes, profile.batch.max_files_per_day,
                                        int(profile.batch.max_bytes_per_day)):
            used = self.store.usage(tenant, day)
            return self._reject(tenant, path, Rejected(
                f"tenant {tenant!r}: {path.name!r} ({nbytes} bytes) is over the daily quota: "
                f"{used['files']}/{profile.batch.max_files_per_day} files and "
                f"{used['bytes']}/{int(profile.batch.max_bytes_per_day)} bytes used today",
                "quota_exceeded"), nbytes)
        route = profile.route_file(path.name)
        app = route[0].name if route and route[0] else None
        rid = self.store.start_record(tenant, "batch", path.name, bytes=nbytes, app=app,
                                      quota_day=day)
        job = FileJob(record_id=rid, tenant=tenant, path=path, nbytes=nbytes, quota_day=day)
        self._taken.add(path)
        self._profiles[path] = profile
        self.queue.push(tenant, job)
        self.log.info("accepted", tenant=tenant, file=path.name, bytes=nbytes, record=rid)
        return Submission(path, rid, True)

    def _check(self, profile: TenantProfile, path: Path) -> int:
        """Check a file already moved to ``inflight/``; return its size."""
        tenant, name = profile.tenant_id, path.name
        if not profile.enabled:
            raise Rejected(f"tenant {tenant!r} is disabled", "tenant_disabled")
        check_name(tenant, name)
        nbytes = check_regular(tenant, path)
        detected = detect_format(name)
        if detected is None or detected[0] not in profile.batch.file_types:
            allowed = ", ".join(profile.batch.file_types)
            kind = detected[0] if detected else "unknown"
            raise Rejected(f"tenant {tenant!r}: {name!r}: file type {kind!r} is not allowed "
                           f"(allowed: {allowed})", "file_type")
        if nbytes == 0:
            raise Rejected(f"tenant {tenant!r}: {name!r} is empty", "empty_file")
        if nbytes > profile.batch.max_file_bytes:
            raise Rejected(f"tenant {tenant!r}: {name!r} is {nbytes} bytes, over the limit of "
                           f"{int(profile.batch.max_file_bytes)} bytes per file", "file_too_big")
        if profile.route_file(name) is None:
            raise Rejected(f"tenant {tenant!r}: {name!r}: no app or table takes this file "
                           "(name it after a table or match an app's file_pattern)", "no_route")
        return nbytes

    def _reject(self, tenant: str, path: Path, err: Rejected, nbytes: int | None = None
                ) -> Submission:
        if nbytes is None:
            try:
                nbytes = path.lstat().st_size
            except OSError:
                nbytes = 0
        rid = self.store.add_record(tenant, "batch", path.name, "rejected", reason=str(err),
                                    bytes=nbytes)
        move_to_outcome(self.config, tenant, path, "rejected",
                        {"reason": str(err), "code": err.code, "record": rid})
        self.tracker.forget(path)
        self.log.warning("rejected", tenant=tenant, file=path.name, code=err.code,
                         reason=short_reason(str(err)), record=rid)
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
        while len(self._running) < self.config.workers:
            item = self.queue.pop()
            if item is None:
                return
            tenant, job = item
            profile = self._profiles.get(job.path) or self.platform.tenant(tenant)
            if job.waits:
                self.store.mark_record(job.record_id, "running")
            jobs = [job, *self._group_with(job, profile)]
            # more of this tenant's files queued: the worker keeps its sinks and app warm
            more = self.queue.pending(tenant) > 0
            proc = self._send(tenant, (self.config, profile, jobs, more))
            started = time.monotonic()
            self._running[proc.sentinel] = _Running(jobs, proc, proc.results, started,
                                                    started + profile.batch.max_file_secs,
                                                    profile)
            for j in jobs:
                self.log.info("started", tenant=tenant, file=j.path.name, record=j.record_id,
                              attempt=j.attempt, pid=proc.pid, group=len(jobs))

    def _group_with(self, job: FileJob, profile: TenantProfile) -> list[FileJob]:
        """Small files of the tenant queued behind ``job`` that share its transaction (see
        :mod:`simbdp.batch.group`): first attempts of uncompressed files under
        ``small_file_bytes``, accepted under the same profile, up to ``group_max_files`` and
        ``group_max_bytes`` in all."""
        cfg = self.config
        if not (self._small(job) and groupable(cfg, profile)):
            return []
        budget = [cfg.group_max_bytes - job.nbytes]

        def fits(other: FileJob) -> bool:
            if (not self._small(other) or other.nbytes > budget[0]
                    or self._profiles.get(other.path, profile) != profile):
                return False
            budget[0] -= other.nbytes
            return True

        return self.queue.take(job.tenant, fits, cfg.group_max_files - 1)

    def _small(self, job: FileJob) -> bool:
        detected = detect_format(job.path.name)
        return (job.attempt == 1 and not job.waits and job.nbytes <= self.config.small_file_bytes
                and detected is not None and detected[1] == "none")

    def _send(self, tenant: str, message: tuple[Any, ...]) -> WorkerProcess:
        """Hand a job to an idle worker, the one warm for this tenant if any; a worker found
        dead is replaced."""
        while self._idle:
            warm = [w for w in self._idle if w.tenant == tenant]
            proc = (warm or self._idle)[-1]
            self._idle.remove(proc)
            try:
                if not proc.is_alive():
                    raise BrokenPipeError
                proc.send(*message)
            except OSError:
                self._discard(proc)
                continue
            proc.tenant = tenant
            return proc
        proc = WorkerProcess()
        proc.tenant = tenant
        # a fresh worker that cannot take it has died: wait() sees that and retries the file
        with suppress(OSError):
            proc.send(*message)
        return proc

    def _discard(self, proc: WorkerProcess) -> None:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=10)
        proc.close()

    def close(self) -> None:
        """Stop the idle workers (running ones are the caller's to finish first)."""
        for proc in self._idle:
            proc.close()  # an idle worker exits on the closed pipe
        for proc in self._idle:
            proc.join(timeout=5)
            if proc.is_alive():
                self._discard(proc)
        self._idle.clear()

    def wait(self, timeout: float, wake: int | None = None) -> int:
        """Wait up to ``timeout`` for running jobs, reading their results as they come;
        finalize those that ended, kill those past their deadline. Returns how many ended.
        ``wake``: a descriptor that ends the wait when readable (the staging watcher's)."""
        wakes = [wake] if wake is not None else []
        if not self._running:
            if wakes:
                wait(wakes, timeout)
            elif timeout > 0:
                time.sleep(timeout)
            return 0
        now = time.monotonic()
        timeout = max(0.0, min(timeout, min(r.deadline for r in self._running.values()) - now))
        pipes = {r.conn: r for r in self._running.values() if not r.heard}
        ready = wait([*self._running, *pipes, *wakes], timeout)
        for obj in ready:
            if obj in pipes:
                self._hear(pipes[obj])  # type: ignore[index]
        # ended: answered (the worker goes back to the pool) or gone (the pipe closed or
        # the process ended)
        ended = [s for s, r in self._running.items() if r.heard or s in ready]
        for sentinel in ended:
            self._collect(self._running.pop(sentinel))
        now = time.monotonic()
        for sentinel, run in list(self._running.items()):
            if now >= run.deadline:
                del self._running[sentinel]
                self._overdue(run)
                ended.append(sentinel)
        return len(ended)

    def _hear(self, run: _Running) -> None:
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

    def _overdue(self, run: _Running) -> None:
        limit = run.profile.batch.max_file_secs
        self._kill(run)
        if run.results is None:  # an answer that came in time counts
            # one file: it failed; small files that shared a transaction: each alone again
            outcome = "failed" if len(run.jobs) == 1 else "retry"
            run.results = [JobResult(outcome=outcome, code="deadline", reason=(
                f"tenant {j.tenant!r}: {run.names()}: the worker ran past the deadline of "
                f"{limit:g} s per file (batch.max_file_secs) and was killed"))
                for j in run.jobs]
        self._collect(run)

    def _kill(self, run: _Running) -> None:
        self._discard(run.process)

    def _collect(self, run: _Running) -> None:
        if not run.heard:
            if not run.conn.closed and run.conn.poll():
                self._hear(run)
            run.heard = True
        results = run.results
        self.queue.done(run.tenant)
        if results is not None and run.process.sentinel >= 0:
            self._idle.append(run.process)  # warm for the next file
        else:
            run.process.join(timeout=5)
            self._discard(run.process)
        if results is None:
            code = run.process.exitcode
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
            results = [JobResult(outcome="retry", code="worker_died",
                                 reason=f"the worker ingesting {run.names()} died ({how})")
                       for _ in run.jobs]
        for job, result in zip(run.jobs, results, strict=True):
            self._finalize(job, result)

    def _finalize(self, job: FileJob, result: JobResult) -> None:
        tenant, path = job.tenant, job.path
        outcome = result.outcome
        if result.reason and not result.reason.startswith(f"tenant {tenant!r}"):
            result.reason = f"tenant {tenant!r}: {result.reason}"  # records name the tenant
        if outcome == "duplicate" and self._is_own_commit(job, result):
            outcome = "processed"
            result.reason = (f"committed by attempt {result.ledger_ingestion_id} before an "
                             "interruption; finished now")
            # the committed rows are the ledger's; what this attempt read loaded nothing
            result.rows_loaded = result.ledger_rows or 0
        stats = {k: getattr(result, k) for k in ("rows_in", "rows_loaded", "rows_updated",
                                                 "rows_rejected", "read_secs", "app_secs",
                                                 "write_secs")}
        if outcome == "waiting":
            if self._wait_out(job, result):
                return
            outcome = "failed"
        if outcome == "retry":
            if job.attempt < self.config.job_attempts:
                self.store.finish_record(job.record_id, "interrupted", reason=result.reason,
                                         **stats)
                rid = self.store.start_record(tenant, "batch", path.name, bytes=job.nbytes,
                                              attempt=job.attempt + 1, quota_day=job.quota_day)
                nxt = replace(job, record_id=rid, attempt=job.attempt + 1)
                delay = _RETRY_BASE_SECS * 2 ** (job.attempt - 1)
                self._retries.append((time.monotonic() + delay, nxt))
                self.log.warning("retry", tenant=tenant, file=path.name,
                                 reason=short_reason(result.reason), attempt=job.attempt,
                                 next_in_secs=delay)
                return
            outcome = "failed"
            result.reason = f"gave up after {job.attempt} attempts: {result.reason}"
        folder = {"processed": "processed", "duplicate": "rejected", "rejected": "rejected",
                  "failed": "failed"}[outcome]
        # the daily byte quota counts what was really read, not the compressed size: a file
        # rejected at a limit (a gzip bomb) counts what was read up to it
        day, decompressed = job.quota_day or today(), result.decompressed_bytes or None
        if outcome in ("duplicate", "rejected"):
            self.store.release_files(tenant, day, 1, job.nbytes)
            if outcome == "rejected" and decompressed:
                self.store.add_bytes(tenant, day, decompressed)
        elif decompressed and decompressed > job.nbytes:
            self.store.add_bytes(tenant, day, decompressed - job.nbytes)
        details = {"result": outcome, "reason": result.reason, "code": result.code,
                   "record": job.record_id,
                   "content_key": result.content_key, **stats,
                   "rejected_rows_file": result.rejected_rows_file,
                   "quality": result.rule_failures}
        move_to_outcome(self.config, tenant, path, folder, details)
        self._taken.discard(path)
        self._profiles.pop(path, None)
        self.store.finish_record(job.record_id, outcome, reason=result.reason,
                                 content_key=result.content_key, sandbox=result.sandbox,
                                 decompressed_bytes=decompressed,
                                 work_started_at=result.work_started_at,
                                 quality=quality_json(result.quality),
                                 sinks=_sinks_json(result), **stats)
        log = self.log.info if outcome == "processed" else self.log.warning
        log(outcome, tenant=tenant, file=path.name, record=job.record_id,
            reason=short_reason(result.reason), **stats)

    def _wait_out(self, job: FileJob, result: JobResult) -> bool:
        """A sink was unavailable: put the file back after a capped, jittered back-off and
        mark its record ``waiting``; False once it has waited ``sink_outage_max_secs``."""
        now = time.time()
        since = job.waiting_since if job.waiting_since is not None else now
        waited = now - since
        if waited >= self.config.sink_outage_max_secs:
            result.reason = (f"tenant {job.tenant!r}: {job.path.name!r}: the sink stayed "
                             f"unavailable for {waited:.0f} s (sink_outage_max_secs "
                             f"{self.config.sink_outage_max_secs:g}): {result.reason}")
            return False
        cap = self.config.sink_retry_max_secs
        delay = min(cap, _RETRY_BASE_SECS * 2 ** min(job.waits, 30))
        delay *= random.uniform(0.75, 1.0)  # jitter: files do not all come back at once
        reason = (f"waiting for the sink since {waited:.0f} s, next try in {delay:.1f} s: "
                  f"{result.reason}")
        self.store.mark_record(job.record_id, "waiting", reason, sinks=_sinks_json(result))
        self._retries.append((time.monotonic() + delay,
                              replace(job, waits=job.waits + 1, waiting_since=since)))
        log = self.log.warning if job.waits == 0 else self.log.info
        log("waiting", tenant=job.tenant, file=job.path.name, record=job.record_id,
            reason=short_reason(result.reason), waited_secs=round(waited, 1),
            next_in_secs=round(delay, 2))
        return True

    def _is_own_commit(self, job: FileJob, result: JobResult) -> bool:
        """A ledger hit from this very file: an earlier attempt interrupted after its commit,
        or this attempt's own commit whose answer was lost (the sink went away meanwhile)."""
        if result.ledger_ingestion_id is None:
            return False
        if result.ledger_ingestion_id == job.record_id:
            return True
        prior = self.store.record(result.ledger_ingestion_id)
        return (prior is not None and prior["tenant"] == job.tenant
                and prior["source"] == job.path.name and prior["outcome"] == "interrupted")

    # loops ---------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self._running or len(self.queue) or self._retries)

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
        while self._running and time.monotonic() < grace:
            self.wait(min(0.5, max(0.0, grace - time.monotonic())))
        for sentinel, run in list(self._running.items()):
            del self._running[sentinel]
            self._kill(run)
            self.queue.done(run.tenant)
            for job in run.jobs:
                self._interrupt(job, f"the manager stopped; the worker was still on the file "
                                f"after stop_grace_secs ({self.config.stop_grace_secs:g} s)")
        for _tenant, job in self._queued_jobs():
            self._interrupt(job, "the manager stopped before this file started")

    def _interrupt(self, job: FileJob, reason: str) -> None:
        # recover() in the next start hands the file, still in inflight/, to its first scan
        self.store.finish_record(job.record_id, "interrupted", reason=reason)
        self.store.release_files(job.tenant, job.quota_day, 1, job.nbytes)
        self._taken.discard(job.path)
        self._profiles.pop(job.path, None)
        self.log.warning("interrupted", tenant=job.tenant, file=job.path.name,
                         record=job.record_id, reason=reason)

    def _queued_jobs(self) -> list[tuple[str, FileJob]]:
        out = []
        while (item := self.queue.pop()) is not None:
            out.append(item)
            self.queue.done(item[0])
        out.extend((j.tenant, j) for _, j in self._retries)
        self._retries.clear()
        return out


def _sinks_json(result: JobResult) -> str | None:
    """The record's ``sinks``: what the attempt left in each sink (JSON), if it reached one."""
    return json.dumps(result.sinks, sort_keys=True) if result.sinks else None
